// `edgesocks doctor`: not built yet.

/** Runs `edgesocks doctor` with the arguments after the subcommand; resolves to the exit status. */
export async function doctorCommand(argv: string[]): Promise<number> {
  void argv;
  process.stderr.write("edgesocks doctor: not built yet\n");
  return 1;
}
