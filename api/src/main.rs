fn main() -> std::process::ExitCode {
    meshfleet_api::cli::main()
}
