// `edgesocks deploy`: not built yet.

/** Runs `edgesocks deploy` with the arguments after the subcommand; resolves to the exit status. */
export async function deployCommand(argv: string[]): Promise<number> {
  void argv;
  process.stderr.write("edgesocks deploy: not built yet\n");
  return 1;
}
