// The edgesocks wire protocol between the local agent and the Worker: the one definition of
// every frame layout, status and close code. The agent imports this folder; nothing else may
// re-declare a number from it. docs/protocol.md describes the same protocol in prose.
//
// constants.ts holds the numbers, addresses.ts the destination parsers, codec.ts the frames.

export * from "./constants.ts";
export * from "./addresses.ts";
export * from "./codec.ts";
