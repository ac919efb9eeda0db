//! The `hermod` command line.

use clap::{Args, Parser, Subcommand};
use hermod_shared::wire::{Decision, MailboxEventKind};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Settings;
use crate::tools::gen_client::{self, NewClient};
use crate::Application;
use hermod_device::Device;

#[derive(Parser)]
#[command(
    name = "hermod",
    version,
    about = "Hermod: a command broker between identity servers and authenticator apps"
)]
struct Cli {
    /// Log lines as text (colours only on a terminal, and never with NO_COLOR set) or as one
    /// JSON object each, for log shippers.
    #[arg(long, global = true, value_enum, env = "HERMOD_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (embedded SQLite unless DATABASE_URL says otherwise).
    Serve(ConfigArg),
    /// Create or upgrade the database schema, then exit; or, with --print-sql, write the schema
    /// as versioned SQL files for setting the database up by hand.
    Migrate(MigrateArgs),
    /// Print an allowed-clients entry with a fresh 256-bit key.
    GenClient {
        #[arg(long, default_value = "client")]
        client_id: String,
        #[arg(long, default_value = "default")]
        group: String,
    },
    /// A simulated authenticator app.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// A callback receiver that prints each callback and checks its signature.
    Receiver {
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: std::net::SocketAddr,
        /// The client's callback signing secret (whsec_…).
        #[arg(long, env = "HERMOD_RECEIVER_SECRET")]
        secret: Option<String>,
    },
    /// Print a new VAPID key pair for `push.webpush.vapid-private-key` (Web Push).
    PushKeys,
    /// Benchmark Hermod against a minimal in-memory server on this machine (see docs/PERFORMANCE.md).
    Bench(crate::tools::bench::BenchArgs),
    #[command(hide = true)]
    BenchFloor(crate::tools::bench::floor::FloorArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// hermod-conf.yml (the vendor format); environment variables HERMOD_* override it.
    #[arg(long, short, env = "HERMOD_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct MigrateArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print the schema as SQL instead of applying it: one `V{n}__{name}.sql` per version, each
    /// recording itself as applied, so that Hermod accepts the database built from them.
    #[arg(long)]
    print_sql: bool,
    /// The dialect of the printed SQL.
    #[arg(long, value_enum, default_value = "postgres", requires = "print_sql")]
    dialect: SqlDialect,
    /// Print the versions after this one (the version a database is at), to upgrade it.
    #[arg(long, default_value_t = 0, requires = "print_sql")]
    from: i64,
    /// Print up to this version (the newest by default).
    #[arg(long, requires = "print_sql")]
    to: Option<i64>,
    /// Write each version to its own file in this folder instead of printing them all.
    #[arg(long, requires = "print_sql")]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SqlDialect {
    Postgres,
    Sqlite,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Enrol from a provisioning link (hermod://enrol?...) or a bare token with --ms.
    Enrol {
        #[arg(long)]
        link: String,
        /// The mailbox URL, overriding the link's (e.g. https://host/ms).
        #[arg(long)]
        ms: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "device.json")]
        state: PathBuf,
    },
    /// Long-poll the mailbox and answer every command.
    Run {
        #[arg(long, default_value = "device.json")]
        state: PathBuf,
        /// Decline instead of approving.
        #[arg(long)]
        decline: bool,
        /// Exit after answering one command.
        #[arg(long)]
        once: bool,
        /// Seconds each long-poll waits.
        #[arg(long, default_value_t = 30)]
        wait: u32,
        /// Instead of long-polling, sleep until a push arrives at the subscription made by
        /// `push-subscribe` (as a phone app in the background would), then poll once.
        #[arg(long)]
        push: bool,
    },
    /// Claim a command shown as a QR code ("log in on another device") with the frame's text,
    /// as a camera would scan it, then answer it.
    Claim {
        #[arg(long, default_value = "device.json")]
        state: PathBuf,
        /// The frame, `hermod.{token}.{t}.{code}`.
        #[arg(long)]
        frame: String,
        /// Decline (reason `user_declined`) instead of approving.
        #[arg(long)]
        decline: bool,
        /// For number matching: the number the user picks among the command's choices.
        #[arg(long)]
        number: Option<u8>,
    },
    /// Subscribe at a Web Push service (one speaking web-push-testing's API) with the server's
    /// VAPID key and register the subscription, so the device is woken by push.
    PushSubscribe {
        #[arg(long, default_value = "device.json")]
        state: PathBuf,
        /// The push service's URL, e.g. http://127.0.0.1:8090.
        #[arg(long)]
        service: String,
    },
    /// Tell the server the device is alive.
    Lifesign {
        #[arg(long, default_value = "device.json")]
        state: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HERMOD_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => {
            use std::io::IsTerminal;
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init();
        }
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

const BANNER: &str = r"
██╗  ██╗███████╗██████╗ ███╗   ███╗ ██████╗ ██████╗
██║  ██║██╔════╝██╔══██╗████╗ ████║██╔═══██╗██╔══██╗
███████║█████╗  ██████╔╝██╔████╔██║██║   ██║██║  ██║
██╔══██║██╔══╝  ██╔══██╗██║╚██╔╝██║██║   ██║██║  ██║
██║  ██║███████╗██║  ██║██║ ╚═╝ ██║╚██████╔╝██████╔╝
╚═╝  ╚═╝╚══════╝╚═╝  ╚═╝╚═╝     ╚═╝ ╚═════╝ ╚═════╝";

async fn run(cli: Cli) -> anyhow::Result<()> {
    let text_logs = matches!(cli.log_format, LogFormat::Text);
    match cli.command {
        Command::Serve(c) => {
            let app = Application::build(Settings::load(c.config.as_deref())?).await?;
            // Not among JSON log lines: a log shipper would take it for broken records.
            if text_logs {
                eprintln!("{BANNER}\n");
            }
            app.run_until(shutdown_signal()).await
        }
        Command::Migrate(m) if m.print_sql => {
            let dialect = match m.dialect {
                SqlDialect::Postgres => crate::store::Dialect::Postgres,
                SqlDialect::Sqlite => crate::store::Dialect::Sqlite,
            };
            let files = crate::store::versioned_sql(dialect, m.from, m.to);
            anyhow::ensure!(!files.is_empty(), "no schema version after {} up to {:?}", m.from, m.to);
            match m.out {
                Some(dir) => {
                    std::fs::create_dir_all(&dir)?;
                    for f in &files {
                        std::fs::write(dir.join(&f.file_name), &f.sql)?;
                        println!("{}", dir.join(&f.file_name).display());
                    }
                }
                None => {
                    for f in &files {
                        println!("-- {}\n{}", f.file_name, f.sql);
                    }
                }
            }
            Ok(())
        }
        Command::Migrate(MigrateArgs { config: c, .. }) => {
            let settings = Settings::load(c.config.as_deref())?;
            let db = crate::store::Db::connect(&settings.database.url).await?;
            db.migrate().await?;
            println!("database is up to date");
            Ok(())
        }
        Command::GenClient { client_id, group } => {
            let client = NewClient::generate(&client_id, &group)
                .map_err(|e| anyhow::anyhow!("{}", e.detail.unwrap_or_default()))?;
            print!("{}", gen_client::render(&client));
            Ok(())
        }
        Command::Device(d) => device(d).await,
        Command::PushKeys => {
            let (private, public) = crate::engine::push::generate_vapid_keys();
            println!("# In hermod-conf.yml (keep the private key secret):");
            println!("push:\n  webpush:\n    vapid-private-key: {private}\n    subject: mailto:you@example.com");
            println!("# The public key (devices get it from GET /ms/push): {public}");
            Ok(())
        }
        Command::Receiver { listen, secret } => crate::tools::receiver::run(listen, secret.as_deref()).await,
        Command::Bench(args) => crate::tools::bench::run(args).await,
        Command::BenchFloor(args) => crate::tools::bench::floor::run(args).await,
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}

async fn device(cmd: DeviceCommand) -> anyhow::Result<()> {
    match cmd {
        DeviceCommand::Enrol { link, ms, name, state } => {
            let device = Device::enrol(&link, ms.as_deref(), name.as_deref()).await?;
            device.save(&state)?;
            println!(
                "enrolled {} for user {} (state in {})",
                device.state.device_id,
                device.state.user_id.as_str(),
                state.display()
            );
            Ok(())
        }
        DeviceCommand::Claim {
            state,
            frame,
            decline,
            number,
        } => {
            let device = Device::load(&state)?;
            let answer = device.claim(&frame).await?;
            if !answer.status().is_success() {
                anyhow::bail!("the claim was refused: {}", answer.text().await?);
            }
            let claimed: hermod_shared::wire::ClaimAccepted = answer.json().await?;
            let c = &claimed.command;
            println!(
                "claimed {} ({}); verification code {}{}",
                c.id,
                c.command_type,
                c.verification_code.as_deref().unwrap_or("-"),
                c.binding_message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            if let (Some(choices), None, false) = (&c.number_choices, number, decline) {
                anyhow::bail!("number matching: pass --number, one of {choices:?}, as the user would pick it");
            }
            let response = hermod_shared::wire::DeviceResponse {
                result: if decline {
                    Decision::Declined
                } else {
                    Decision::Approved
                },
                reason: None,
                number: number.filter(|_| !decline),
                data: None,
            };
            let answer = device.answer(&c.id, &response).await?;
            println!("{} {}", answer.status().as_u16(), answer.text().await?);
            Ok(())
        }
        DeviceCommand::PushSubscribe { state, service } => {
            let mut device = Device::load(&state)?;
            let offered = device.push_status().await?;
            let Some(vapid) = offered.webpush_vapid_public_key else {
                anyhow::bail!("the server sends no Web Push (push.webpush.vapid-private-key is not set)");
            };
            let http = reqwest::Client::new();
            let subscription = hermod_device::push::Subscription::create(&http, &service, &vapid).await?;
            let answer = device.register_push(&subscription).await?;
            if !answer.status().is_success() {
                anyhow::bail!("the registration was refused: {}", answer.text().await?);
            }
            println!(
                "subscribed at {service} ({}); pushes to this device wake it (hermod device run --push)",
                subscription.client_hash
            );
            device.state.push = Some(subscription);
            device.save(&state)?;
            Ok(())
        }
        DeviceCommand::Lifesign { state } => {
            let device = Device::load(&state)?;
            println!("{}", device.lifesign().await?);
            Ok(())
        }
        DeviceCommand::Run {
            state,
            decline,
            once,
            wait,
            push,
        } => run_device(&state, decline, once, if push { None } else { Some(wait) }).await,
    }
}

/// Answers every command; `wait` is each long-poll's, or `None` to be woken by push instead.
async fn run_device(path: &Path, decline: bool, once: bool, wait: Option<u32>) -> anyhow::Result<()> {
    let mut device = Device::load(path)?;
    let decision = if decline {
        Decision::Declined
    } else {
        Decision::Approved
    };
    println!("device {} polling {}", device.state.device_id, device.state.ms_url);
    let http = reqwest::Client::new();
    let mut pushes_seen = match (&device.state.push, wait) {
        (Some(sub), None) => sub.received(&http).await?.len(),
        (None, None) => anyhow::bail!("no push subscription: run `hermod device push-subscribe` first"),
        _ => 0,
    };
    let mut first = true;
    loop {
        if let (Some(sub), None, false) = (&device.state.push, wait, first) {
            // Asleep until the push service has a new push for us (a phone's OS would wake the app).
            println!("waiting for a push");
            loop {
                let received = sub.received(&http).await?;
                if received.len() > pushes_seen {
                    pushes_seen = received.len();
                    println!("woken by push: {}", received.last().map(String::as_str).unwrap_or(""));
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        first = false;
        let page = device.poll(wait.unwrap_or(0)).await?;
        device.save(path)?;
        for item in page.items {
            let c = &item.command;
            match item.kind {
                MailboxEventKind::Cancelled => println!("cancelled {} ({})", c.id, c.command_type),
                MailboxEventKind::Command => {
                    println!("received {} ({}) payload {}", c.id, c.command_type, c.payload);
                    let data = serde_json::json!({ "simulated": true, "type": c.command_type });
                    let answer = device.respond(&c.id, decision, Some(data)).await?;
                    println!("answered {} {:?}: HTTP {}", c.id, decision, answer.status().as_u16());
                    if once {
                        return Ok(());
                    }
                }
            }
        }
    }
}
