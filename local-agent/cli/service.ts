// `edgesocks service`: not built yet.

/** Runs `edgesocks service` with the arguments after the subcommand; resolves to the exit status. */
export async function serviceCommand(argv: string[]): Promise<number> {
  void argv;
  process.stderr.write("edgesocks service: not built yet\n");
  return 1;
}
