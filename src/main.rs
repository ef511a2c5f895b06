use clap::Parser;

fn main() {
    let cli = eco::cli::args::Cli::parse();
    let code = match eco::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if err.is::<eco::config::ConfigErrors>() {
                eprintln!("{err}");
            } else {
                eprintln!("error: {err:#}");
            }
            eco::error::exit_code(&err)
        }
    };
    std::process::exit(code);
}
