#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hermod::cli::main()
}
