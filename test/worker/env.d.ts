// Types for `exports` from "cloudflare:workers" in the Worker tests: the main Worker's default
// export is a fetch handler (wrangler types would generate this from wrangler.toml).
declare namespace Cloudflare {
  interface Exports {
    default: Fetcher;
  }
}
