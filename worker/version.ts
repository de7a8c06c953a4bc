/** The edgesocks release, reported by /healthz and the agent's --version; equal to package.json's. */
export const EDGESOCKS_VERSION = "0.1.0";
