//! The `anteroom` command: run, check a config, or start the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anteroom::assets::Assets;
use anteroom::config::Config;
use anteroom::server::{App, Exit};
use anteroom::{demo, logging};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// mimalloc: Pingora allocates many small buffers per request, and glibc's
/// malloc cost about 13% of the CPU of a proxied request (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A virtual waiting room in front of your app or LLM API.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the configuration is.
#[derive(clap::Args)]
struct ConfigFile {
    /// The configuration file.
    #[arg(
        short,
        long,
        default_value = "conf/anteroom.toml",
        env = "ANTEROOM_CONFIG"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[command(flatten)]
        config: ConfigFile,
        /// Take over the listening sockets and the state of the running
        /// process (send it SIGQUIT once this one has started), with no
        /// connection refused.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a configuration file and exit (non-zero if it has problems).
    Check(ConfigFile),
    /// Ask the running process's admin listener for /healthz (exit 0 when
    /// healthy): a container HEALTHCHECK without curl.
    Health(ConfigFile),
    /// Write a new RSA key pair for signing passes and tickets.
    Keygen {
        /// Directory for anteroom.key.pem (mode 0600) and anteroom.pub.pem.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Key size in bits (2048 or more).
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(2048..=8192))]
        bits: u32,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Work with the events of `[[events.sink]]`s.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Replay an arrival curve against a sessions room of a config, in
    /// simulated time, on the waiting room's own rules: what visitors would
    /// experience and what a Redis store would see (docs/scaling.md).
    Simulate {
        #[command(flatten)]
        config: ConfigFile,
        /// `campaign:PEAK:SECONDS` (a spike, halving every fifth of the span),
        /// `steady:RATE:SECONDS`, `burst:COUNT`, or a CSV file of arrivals per second.
        #[arg(long)]
        arrivals: String,
        /// The sessions room (default: the config's first).
        #[arg(long)]
        room: Option<String>,
        /// How long a visit lasts: `"2m"`, or a range `"1m..5m"` (uniform).
        #[arg(long, default_value = "1m..5m")]
        visit: String,
        /// A waiting visitor gives up after this long (default: never).
        #[arg(long)]
        patience: Option<String>,
        /// Visitors leave explicitly at the end of a visit (default: their session lapses).
        #[arg(long)]
        leave: bool,
        /// Seed of the visit lengths (the same seed, the same run).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Check a launch's published draw: the seed is the one committed to,
    /// and the line is exactly the order it gives (docs/adr/0015). With
    /// `--entrant`, also that each of these entrants (a receipt's digest)
    /// is in the line, and where.
    VerifyDraw {
        /// The published draw (JSON).
        file: PathBuf,
        /// An entrant's digest (hex), from its receipt; repeatable.
        #[arg(long)]
        entrant: Vec<String>,
        /// A signed receipt (a file holding the JWS); repeatable. Checked
        /// against `--jwks`, then found in the line.
        #[arg(long, requires = "jwks")]
        receipt: Vec<PathBuf>,
        /// The JWKS the receipts are checked with (`/.well-known/jwks.json`).
        #[arg(long)]
        jwks: Option<PathBuf>,
    },
    /// Start a self-contained showcase on loopback with an embedded toy app.
    Demo {
        /// anteroom's public port.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// anteroom's admin port.
        #[arg(long, default_value_t = 9090)]
        admin_port: u16,
        /// The toy app's port.
        #[arg(long, default_value_t = 3000)]
        upstream_port: u16,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Deliver the events of a dead-letter (or any JSON lines) file to the
    /// configured sinks again; the file is renamed `<file>.replayed` once
    /// every event is delivered.
    Replay {
        /// The file of events, one JSON object per line.
        file: PathBuf,
        #[command(flatten)]
        config: ConfigFile,
        /// Only to this sink (by name); default: every sink.
        #[arg(long)]
        sink: Option<String>,
    },
}

fn main() -> ExitCode {
    let result = run(Cli::parse().command);
    logging::flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("anteroom: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check(ConfigFile { config }) => {
            let c = Config::load(&config)?;
            Assets::load(&c)?;
            println!(
                "{}: ok ({} upstreams, {} rooms, {} routes)",
                config.display(),
                c.upstreams.len(),
                c.rooms.len(),
                c.routes.len()
            );
        }
        Command::Run {
            config: ConfigFile { config },
            upgrade,
        } => {
            let c = Config::load(&config)?;
            logging::init(&c.log);
            App::build(&c, Exit::WhenDrained, upgrade)
                .context("cannot start")?
                .run();
        }
        Command::VerifyDraw {
            file,
            entrant,
            receipt,
            jwks,
        } => {
            use anteroom::draw::{Published, Receipt, parse_digest};
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let draw: Published = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a published draw", file.display()))?;
            draw.verify()
                .with_context(|| format!("{}: the draw does not check out", file.display()))?;
            println!(
                "{}: the draw of {:?} in room {:?} checks out: {} entrants, in the order the committed seed gives",
                file.display(),
                draw.event,
                draw.room,
                draw.line.len()
            );
            for e in &entrant {
                let position = draw.find(&parse_digest("entrant", e.trim())?)?;
                println!("entrant {e}: position {position}");
            }
            if let Some(jwks) = jwks {
                let keys = std::fs::read_to_string(&jwks)
                    .with_context(|| format!("cannot read {}", jwks.display()))?;
                for r in &receipt {
                    let jws = std::fs::read_to_string(r)
                        .with_context(|| format!("cannot read {}", r.display()))?;
                    let checked = Receipt::verify(&jws, &keys)
                        .and_then(|receipt| Ok((draw.place(&receipt)?, receipt)))
                        .with_context(|| format!("receipt {}", r.display()))?;
                    println!(
                        "receipt {}: signed, entrant {} at position {}",
                        r.display(),
                        checked.1.entrant,
                        checked.0
                    );
                }
            }
        }
        Command::Health(ConfigFile { config }) => {
            let c = Config::load(&config)?;
            anteroom::server::admin::check_health(
                c.admin.listen,
                std::time::Duration::from_secs(2),
            )
            .map_err(anyhow::Error::msg)?;
            println!("healthy");
        }
        Command::Simulate {
            config: ConfigFile { config },
            arrivals,
            room,
            visit,
            patience,
            leave,
            seed,
        } => {
            let c = Config::load(&config)?;
            let duration = |what: &str, v: &str| {
                humantime::parse_duration(v.trim())
                    .map_err(|e| anyhow::anyhow!("--{what} {v:?}: {e}"))
            };
            let (shortest, longest) = visit.split_once("..").unwrap_or((&visit, &visit));
            let model = anteroom::simulate::Model {
                visit: (duration("visit", shortest)?, duration("visit", longest)?),
                shape: anteroom::simulate::VisitShape::Uniform,
                patience: patience.map(|p| duration("patience", &p)).transpose()?,
                leave,
                seed,
            };
            let curve = anteroom::simulate::Curve::parse(&arrivals)?;
            print!(
                "{}",
                anteroom::simulate::run(&c, room.as_deref(), &curve, &model)?
            );
        }
        Command::Keygen { out, bits, force } => {
            let (private, public, kid) = anteroom::token::keygen(&out, bits as usize, force)?;
            println!(
                "wrote {} (private, mode 0600) and {} (public)",
                private.display(),
                public.display()
            );
            println!("kid: {kid}");
        }
        Command::Events {
            command:
                EventsCommand::Replay {
                    file,
                    config: ConfigFile { config },
                    sink,
                },
        } => {
            let c = Config::load(&config)?;
            let runtime = tokio::runtime::Runtime::new()?;
            let (delivered, skipped) = runtime
                .block_on(anteroom::events::sinks::replay(
                    &c.events,
                    &file,
                    sink.as_deref(),
                ))
                .map_err(anyhow::Error::msg)?;
            println!(
                "{}: {delivered} events delivered{}",
                file.display(),
                if skipped > 0 {
                    format!(", {skipped} lines that are not events skipped")
                } else {
                    String::new()
                }
            );
        }
        Command::Demo {
            port,
            admin_port,
            upstream_port,
        } => {
            let ports = demo::Ports {
                public: port,
                admin: admin_port,
                upstream: upstream_port,
            };
            let key_dir = demo::ephemeral_key_dir()?;
            let app = demo::config(ports, &key_dir)
                .map_err(anyhow::Error::from)
                .and_then(|c| {
                    logging::init(&c.log);
                    let toy = demo::toy_upstream(upstream_port).with_context(|| {
                        format!("cannot listen on 127.0.0.1:{upstream_port} for the toy app")
                    })?;
                    let mut app = App::build(&c, Exit::WhenDrained, false)
                        .context("cannot start the demo")?;
                    app.server.add_service(toy);
                    Ok(app)
                });
            // The key is in memory now; nothing of it stays on disk.
            let _ = std::fs::remove_dir_all(&key_dir);
            let app = app?;
            println!("{}", demo::banner(ports));
            app.run();
        }
    }
    Ok(())
}
