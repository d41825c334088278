//! No secret in anything the relay prints: `check`, `status` and `run` (until it has logged its
//! connections, retries included, and `/metrics`), with every form a secret takes in the
//! configuration, in text and JSON logs, at info, debug and trace (the client libraries' own lines).
//! Each run must also print something that names the host it was about, so that an empty or
//! cut-short output cannot pass.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::harness::{
    Receiver, TestDb, always, database_name, free_port, postgres_addr, relay_bin, signal, unique,
};

/// Each secret as the configuration gives it, and the forms it must not be printed in either.
const SECRETS: &[&str] = &[
    "Pg%40Single%3A1",
    "Pg@Single:1",
    "PgMulti-2",
    "Pg kv 'quoted' 3",
    "PgDown-4",
    "PgDownMulti-5",
    "AmqpPw-6",
    "RedisPw-7",
    "BullPw-8",
    "NatsPw-9",
    "NatsToken-10",
    "HookPw-11",
    // Basic credentials of hookuser:HookPw-11.
    "aG9va3VzZXI6SG9va1B3LTEx",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "KafkaPw-12",
    "OtelTok-13",
    "TomlDb-14",
    "TomlHook-15",
    "TomlBad-16",
    "TomlKafka-17",
];

/// One configuration: its settings (or TOML file), the commands to try, and what their output
/// must mention (a host or file) for the run to count.
struct Case {
    name: &'static str,
    env: Vec<(String, String)>,
    commands: &'static [&'static str],
    /// Trace too where the client libraries talk: the case with every sink.
    levels: &'static [&'static str],
    /// What the output of some commands must mention.
    mentions: Vec<(&'static [&'static str], String)>,
}

impl Case {
    fn mentions(&self, command: &str) -> Vec<String> {
        self.mentions
            .iter()
            .filter(|(commands, _)| commands.contains(&command))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

const RUN: &[&str] = &["run"];
const CHECK_RUN: &[&str] = &["check", "run"];
const STATUS: &[&str] = &["status"];
const ALL: &[&str] = &["check", "status", "run"];

const LEVELS: &[&str] = &["info", "debug"];

/// One pending event for each sink of the case with every sink (and one for the default sink).
async fn insert_an_event_per_sink(db: &TestDb) {
    for topic in [
        "mq.a", "cache.a", "jobs.a", "js.a", "token.a", "hook.a", "stream.a", "other",
    ] {
        db.insert(topic, Some("k"), b"{}", "{}").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_is_printed_in_any_form_by_check_status_or_run_at_any_log_level() {
    let db = TestDb::create().await;
    let name = database_name(&db.url).to_string();
    let pg = postgres_addr();
    let (closed1, closed2, kafka, otel) = (free_port(), free_port(), free_port(), free_port());
    // Answers 503: the webhook's event stays pending, so that every run posts it (with its
    // user:password) rather than only the first.
    let receiver = Receiver::start(always(503)).await;
    let hook = receiver
        .url("/{topic}")
        .replacen("http://", "http://hookuser:HookPw-11@", 1);
    insert_an_event_per_sink(&db).await;
    let dir = std::env::temp_dir().join(unique("secrets"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let valid_toml = dir.join("valid.toml");
    std::fs::write(
        &valid_toml,
        format!(
            "database_url = \"postgres://postgres:TomlDb-14@{pg}/{name}\"\nsink = \"http\"\n\
             webhook_url = \"http://hookuser:TomlHook-15@127.0.0.1:{closed1}/x\"\n\
             webhook_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
             routes = [\"stream.*=stream\"]\n\
             [sinks.stream]\nkind = \"kafka\"\nkafka_brokers = \"127.0.0.1:{kafka}\"\n\
             kafka_properties = {{ \"security.protocol\" = \"SASL_PLAINTEXT\", \
             \"sasl.mechanism\" = \"PLAIN\", \"sasl.username\" = \"relay\", \
             \"sasl.password\" = \"TomlKafka-17\" }}\n"
        ),
    )
    .expect("write toml");
    let bad_toml = dir.join("bad.toml");
    std::fs::write(
        &bad_toml,
        format!("sink = \"stdout\"\ndatabase_url = postgres://postgres:TomlBad-16@{pg}/{name}\n"),
    )
    .expect("write toml");

    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let stdout_sink = [("OUTBOX_SINK", "stdout")];
    let every_sink = [
        ("OUTBOX_SINK", "stdout"),
        (
            "OUTBOX_SINKS",
            "js=nats,token=nats,hook=http,mq=rabbitmq,cache=redis,jobs=bullmq,stream=kafka",
        ),
        (
            "OUTBOX_ROUTES",
            "js.*=js,token.*=token,hook.*=hook,mq.*=mq,cache.*=cache,jobs.*=jobs,stream.*=stream",
        ),
        (
            "OUTBOX_SINK_JS_NATS_URL",
            "nats://natsuser:NatsPw-9@127.0.0.1:4222",
        ),
        (
            "OUTBOX_SINK_TOKEN_NATS_URL",
            "nats://NatsToken-10@127.0.0.1:4222",
        ),
        ("OUTBOX_SINK_HOOK_WEBHOOK_URL", &hook),
        (
            "OUTBOX_SINK_HOOK_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ),
        (
            "OUTBOX_SINK_MQ_AMQP_URL",
            "amqp://guest:AmqpPw-6@127.0.0.1:5672/%2f",
        ),
        (
            "OUTBOX_SINK_CACHE_REDIS_URL",
            "redis://:RedisPw-7@127.0.0.1:6379/0",
        ),
        (
            "OUTBOX_SINK_JOBS_BULLMQ_URL",
            "redis://default:BullPw-8@127.0.0.1:6379/0",
        ),
        (
            "OUTBOX_SINK_STREAM_KAFKA_BROKERS",
            &format!("127.0.0.1:{kafka}"),
        ),
        (
            "OUTBOX_SINK_STREAM_KAFKA_PROPERTIES",
            "security.protocol=SASL_PLAINTEXT,sasl.mechanism=PLAIN,sasl.username=relay,sasl.password=KafkaPw-12",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://127.0.0.1:{otel}"),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20OtelTok-13",
        ),
    ];
    let database = |url: String| vec![("OUTBOX_DATABASE_URL".to_string(), url)];
    let with = |mut a: Vec<(String, String)>, b: &[(&str, &str)]| {
        a.extend(env(b));
        a
    };
    let cases = vec![
        Case {
            name: "every sink, percent-encoded password",
            env: with(
                database(format!("postgres://postgres:Pg%40Single%3A1@{pg}/{name}")),
                &every_sink,
            ),
            commands: &["check", "status", "run"],
            levels: &["info", "debug", "trace"],
            mentions: vec![
                (CHECK_RUN, "127.0.0.1:5672".into()),
                (RUN, "127.0.0.1:6379".into()),
                (RUN, format!("127.0.0.1:{kafka}")),
                (RUN, "answered HTTP 503".into()),
                (STATUS, "pending events".into()),
            ],
        },
        Case {
            name: "several hosts, the first down",
            env: with(
                database(format!(
                    "postgres://postgres:PgMulti-2@127.0.0.1:{closed1},{pg}/{name}"
                )),
                &stdout_sink,
            ),
            commands: &["check", "status", "run"],
            levels: LEVELS,
            mentions: vec![
                (CHECK_RUN, format!("127.0.0.1:{closed1}")),
                (STATUS, "pending events".into()),
            ],
        },
        Case {
            name: "key/value DSN, quoted password with spaces",
            env: with(
                database(format!(
                    "host={} port={} user=postgres password = 'Pg kv \\'quoted\\' 3' dbname={name}",
                    pg.ip(),
                    pg.port()
                )),
                &stdout_sink,
            ),
            commands: &["check", "status", "run"],
            levels: LEVELS,
            mentions: vec![
                (CHECK_RUN, format!("port={}", pg.port())),
                (STATUS, "pending events".into()),
            ],
        },
        Case {
            name: "unreachable",
            env: with(
                database(format!(
                    "postgres://postgres:PgDown-4@127.0.0.1:{closed1}/{name}"
                )),
                &stdout_sink,
            ),
            commands: &["check", "status", "run"],
            levels: LEVELS,
            mentions: vec![(ALL, format!("127.0.0.1:{closed1}"))],
        },
        Case {
            name: "unreachable, several hosts",
            env: with(
                database(format!(
                    "postgres://postgres:PgDownMulti-5@127.0.0.1:{closed1},127.0.0.1:{closed2}/{name}"
                )),
                &stdout_sink,
            ),
            commands: &["check", "run"],
            levels: LEVELS,
            mentions: vec![(CHECK_RUN, format!("127.0.0.1:{closed2}"))],
        },
        Case {
            name: "TOML file with secrets",
            env: env(&[("OUTBOX_CONFIG", &valid_toml.display().to_string())]),
            commands: &["check", "status", "run"],
            levels: LEVELS,
            mentions: vec![
                (CHECK_RUN, format!("127.0.0.1:{closed1}")),
                (RUN, format!("127.0.0.1:{kafka}")),
                (STATUS, "pending events".into()),
            ],
        },
        Case {
            name: "TOML file with an unquoted URL",
            env: env(&[("OUTBOX_CONFIG", &bad_toml.display().to_string())]),
            commands: &["check", "run"],
            levels: LEVELS,
            mentions: vec![
                (CHECK_RUN, bad_toml.display().to_string()),
                (CHECK_RUN, "line 2".into()),
            ],
        },
    ];

    // Every case, command, format and level at once, a few processes at a time.
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(6));
    let mut runs = Vec::new();
    let mut own_databases = Vec::new();
    for case in &cases {
        for command in case.commands {
            for format in ["text", "json"] {
                for level in case.levels {
                    let mut env = case.env.clone();
                    // A run that must post to the webhook must lead: on the shared database it
                    // might stand by behind another case's run until its deadline.
                    if *command == "run" && case.mentions(command).iter().any(|m| m.contains("503"))
                    {
                        let own = TestDb::create().await;
                        insert_an_event_per_sink(&own).await;
                        let own_name = database_name(&own.url).to_string();
                        for (key, value) in &mut env {
                            if key == "OUTBOX_DATABASE_URL" {
                                *value =
                                    value.replace(&format!("/{name}"), &format!("/{own_name}"));
                            }
                        }
                        own_databases.push(own);
                    }
                    env.push(("OUTBOX_LOG_FORMAT".into(), format.into()));
                    env.push(("RUST_LOG".into(), level.to_string()));
                    let what = format!("{} / {command} / {format} / {level}", case.name);
                    let (limit, dir, command) = (limit.clone(), dir.clone(), *command);
                    let until = case.mentions(command);
                    runs.push((
                        what,
                        case.mentions(command),
                        tokio::spawn(async move {
                            let _permit = limit.acquire_owned().await;
                            tokio::task::spawn_blocking(move || {
                                execute(command, &env, &until, &dir)
                            })
                            .await
                            .expect("the run")
                        }),
                    ));
                }
            }
        }
    }
    let mut failures = String::new();
    for (what, mentions, run) in runs {
        let output = run.await.expect("the run");
        assert!(!output.trim().is_empty(), "{what}: no output at all");
        for mention in &mentions {
            if !output.contains(mention.as_str()) {
                let _ = writeln!(
                    failures,
                    "{what}: does not mention {mention}:\n{}",
                    tail(&output)
                );
            }
        }
        for secret in SECRETS {
            for (n, line) in output.lines().enumerate() {
                if line.contains(secret) {
                    let _ = writeln!(failures, "{what}: {secret:?} in line {n}: {line}");
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures}");
    // The webhook with user:password was used, not only configured.
    assert!(receiver.post_count() > 0, "no webhook request arrived");
    eprintln!("secrets: every run checked in {:.1?}", started.elapsed());
}

/// `outbox-relay <command>` with `env` only: its stdout and stderr. `run` is stopped (SIGTERM)
/// once it mentions each of `until` and is relaying or has logged a retry (or after 20 s); its
/// `/metrics` are read before and checked with the rest.
fn execute(command: &str, env: &[(String, String)], until: &[String], dir: &Path) -> String {
    let id = unique("run");
    let (out, err): (PathBuf, PathBuf) =
        (dir.join(format!("{id}.out")), dir.join(format!("{id}.err")));
    let http = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(relay_bin())
        .arg(command)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("OUTBOX_HTTP_ADDR", &http)
        .env("OUTBOX_RETRY_BASE_DELAY_MS", "50")
        .env("OUTBOX_RETRY_MAX_DELAY_MS", "200")
        .env("OUTBOX_PUBLISH_TIMEOUT_MS", "2000")
        .env("OUTBOX_SHUTDOWN_TIMEOUT_SECS", "2")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start outbox-relay");
    let read = || {
        std::fs::read_to_string(&out).unwrap_or_default()
            + &std::fs::read_to_string(&err).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut metrics = String::new();
    let mut stopped = false;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        let so_far = read();
        let settled = until.iter().all(|u| so_far.contains(u.as_str()))
            && (so_far.contains("relaying") || so_far.matches("cannot").count() >= 2);
        if command == "run" && !stopped && (settled || Instant::now() >= deadline) {
            metrics = get(&http, "/metrics");
            signal(child.id(), "TERM");
            stopped = true;
        }
        if Instant::now() >= deadline + Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = read() + &metrics;
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(err);
    output
}

/// The body of an HTTP/1.0 GET, empty if it does not answer.
fn get(addr: &str, path: &str) -> String {
    let mut body = String::new();
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let _ = stream.read_to_string(&mut body);
    }
    body
}

fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
