//! The command line: `cap4 run`, `cap4 check-config`, `cap4 amd FILE` (`amd.rs`)
//! and thin clients of the daemon's HTTP API (`dial`, `calls`, `show`,
//! `hangup`, `health`, `plan run|show|cancel|runs`; `api_client.rs` is
//! their HTTP client). Returns exit codes from
//! [`crate::exit`]; never talks to Baresip itself.

use std::path::PathBuf;

use hyper::Method;
use serde_json::{Value, json};

use crate::config::{API_TOKEN_ENV, Config};
use crate::environment::ProcessEnv;
use crate::exit;
use crate::http_client::HttpError;

mod amd;
mod api_client;

const USAGE: &str = "\
usage:
  cap4 run --config PATH         run the daemon
  cap4 check-config PATH         validate a config file (exit 78 if invalid)
  cap4 baresip-config --out DIR [--config PATH] [--base DIR]
                                 write Baresip's config and accounts (0600) into DIR
                                 from [sip] (default PATH /etc/cap4/cap4.toml,
                                 base /etc/cap4/baresip); the SIP password from
                                 $CAP4_SIP_PASSWORD or the sip-password credential
  cap4 dial NUMBER               place a call (+ and 3-15 digits)
  cap4 calls [--limit N] [--before ID]
                                 list calls, newest first
  cap4 show ID [--json]          one call with its timeline
  cap4 hangup [ID]               hang up a call (default: the active one)
  cap4 health                    the daemon's state (Baresip link, active call)
  cap4 plan run NAME             start a run of the [[plan]] NAME
  cap4 plan show ID              one plan run: its state, attempts and calls
  cap4 plan cancel ID            cancel a plan run (and hang up its call)
  cap4 plan runs                 plan runs, newest first
  cap4 amd [--amd-config AMD.toml] FILE.wav
                                 classify a recording: human or answering machine (JSON)
  cap4 --version

API client options: --api ADDRESS:PORT (an IP address or localhost: the daemon
refuses other names; default: $CAP4_API or 127.0.0.1:8000);
the bearer token, if the daemon needs one, comes from $CAP4_API_TOKEN.";

/// What the command line asks for, parsed once (pure: no environment read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run {
        config: PathBuf,
    },
    CheckConfig {
        config: PathBuf,
    },
    BaresipConfig {
        config: PathBuf,
        base: PathBuf,
        out: PathBuf,
    },
    /// A request to the daemon's HTTP API. `api`: `--api HOST:PORT`, if given.
    Api {
        call: ApiCall,
        api: Option<String>,
        json: bool,
    },
    Amd {
        file: PathBuf,
        amd_config: Option<PathBuf>,
    },
    Version,
    Help,
}

/// The API commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCall {
    Dial {
        number: String,
    },
    Calls {
        limit: Option<String>,
        before: Option<String>,
    },
    Show {
        id: String,
    },
    /// `None`: the active call.
    Hangup {
        id: Option<String>,
    },
    Health,
    RunPlan {
        name: String,
    },
    ShowRun {
        id: String,
    },
    CancelRun {
        id: String,
    },
    Runs,
}

/// A command line that could not be carried out: the exit code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(i32, String);

fn usage(message: &str) -> Failure {
    Failure(exit::USAGE, message.to_string())
}

/// Parses `args` (without the program name).
pub fn parse(args: Vec<String>) -> Result<Command, Failure> {
    let mut args = Args(args);
    let Some(command) = args.next_positional() else { return Err(usage("no command")) };
    let parsed = match command.as_str() {
        "run" => Command::Run {
            config: args.option("--config").or_else(|| args.next_positional()).ok_or_else(|| usage("run needs --config PATH"))?.into(),
        },
        "check-config" => Command::CheckConfig {
            config: args.next_positional().or_else(|| args.option("--config")).ok_or_else(|| usage("check-config needs PATH"))?.into(),
        },
        "baresip-config" => Command::BaresipConfig {
            config: args.option("--config").unwrap_or_else(|| "/etc/cap4/cap4.toml".into()).into(),
            base: args.option("--base").unwrap_or_else(|| "/etc/cap4/baresip".into()).into(),
            out: args.option("--out").ok_or_else(|| usage("baresip-config needs --out DIR"))?.into(),
        },
        "amd" => {
            let amd_config = args.option("--amd-config").map(PathBuf::from);
            let file = args.next_positional().ok_or_else(|| usage("amd needs FILE.wav"))?;
            Command::Amd { file: file.into(), amd_config }
        }
        "dial" | "calls" | "show" | "hangup" | "health" | "plan" => {
            let api = args.option("--api");
            let json = args.flag("--json");
            let call = match command.as_str() {
                "plan" => {
                    let what = args.next_positional().ok_or_else(|| usage("plan needs run NAME, show ID, cancel ID or runs"))?;
                    let mut operand = |m: &str| args.next_positional().ok_or_else(|| usage(m));
                    match what.as_str() {
                        "run" => ApiCall::RunPlan { name: operand("plan run needs NAME")? },
                        "show" => ApiCall::ShowRun { id: operand("plan show needs ID")? },
                        "cancel" => ApiCall::CancelRun { id: operand("plan cancel needs ID")? },
                        "runs" => ApiCall::Runs,
                        other => return Err(usage(&format!("unknown plan command `{other}`"))),
                    }
                }
                "dial" => ApiCall::Dial { number: args.next_positional().ok_or_else(|| usage("dial needs NUMBER"))? },
                "calls" => ApiCall::Calls { limit: args.option("--limit"), before: args.option("--before") },
                "show" => ApiCall::Show { id: args.next_positional().ok_or_else(|| usage("show needs ID"))? },
                "hangup" => ApiCall::Hangup { id: args.next_positional() },
                _ => ApiCall::Health,
            };
            Command::Api { call, api, json }
        }
        "--version" | "-V" | "version" => Command::Version,
        "--help" | "-h" | "help" => Command::Help,
        other => return Err(usage(&format!("unknown command `{other}`"))),
    };
    if !args.done() {
        return Err(usage(&format!("unexpected arguments: {}", args.0.join(" "))));
    }
    Ok(parsed)
}

/// Runs the command in `args` (without the program name) and returns the exit code.
pub fn main(args: Vec<String>) -> i32 {
    let result = match parse(args) {
        Ok(Command::Run { config }) => return crate::daemon::run(&config),
        Ok(Command::CheckConfig { config }) => return check_config(&config),
        Ok(Command::BaresipConfig { config, base, out }) => return baresip_config(&config, &base, &out),
        Ok(Command::Amd { file, amd_config }) => return amd::run(&file, amd_config.as_deref()),
        Ok(Command::Api { call, api, json }) => api_command(call, api, json),
        Ok(Command::Version) => emit(&format!("cap4 {}\n", env!("CARGO_PKG_VERSION"))).map_err(stdout_failure),
        Ok(Command::Help) => emit(&format!("{USAGE}\n")).map_err(stdout_failure),
        Err(failure) => Err(failure),
    };
    match result {
        Ok(()) => exit::OK,
        Err(Failure(code, message)) => {
            eprintln!("cap4: {message}");
            if code == exit::USAGE {
                eprintln!("{USAGE}");
            }
            code
        }
    }
}

fn stdout_failure(e: std::io::Error) -> Failure {
    Failure(exit::FAILURE, format!("writing to standard output: {e}"))
}

/// A tiny argument reader: `--name value` options and positionals, in any order.
struct Args(Vec<String>);

impl Args {
    fn option(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|a| a == name)?;
        if i + 1 >= self.0.len() {
            return None;
        }
        let value = self.0.remove(i + 1);
        self.0.remove(i);
        Some(value)
    }

    fn flag(&mut self, name: &str) -> bool {
        match self.0.iter().position(|a| a == name) {
            Some(i) => {
                self.0.remove(i);
                true
            }
            None => false,
        }
    }

    fn next_positional(&mut self) -> Option<String> {
        let i = self.0.iter().position(|a| !a.starts_with("--") || a == "--version" || a == "--help")?;
        Some(self.0.remove(i))
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

fn check_config(path: &std::path::Path) -> i32 {
    match Config::load(path, &ProcessEnv) {
        Ok(config) => {
            let _ = emit(&format!(
                "{}: ok (baresip {}, api {}, storage {})\n",
                path.display(),
                config.baresip.ctrl,
                config.api.listen,
                config.storage.dir.display()
            ));
            exit::OK
        }
        Err(err) => {
            eprintln!("cap4: {err}");
            exit::CONFIG
        }
    }
}

/// `cap4 baresip-config`: Baresip's files from `[sip]`, before Baresip
/// starts. A bad `cap4.toml` must not keep Baresip down (its unit restarts
/// and would reboot the box in a loop): then the base files are written as
/// they are, and `cap4 run` itself refuses the file, naming the key.
fn baresip_config(config: &std::path::Path, base: &std::path::Path, out: &std::path::Path) -> i32 {
    let sip = match Config::load_sip(config) {
        Ok(sip) => sip,
        Err(err) => {
            eprintln!("cap4: {err}; Baresip gets {} as it is", base.display());
            crate::sip::SipConfig::default()
        }
    };
    let password = crate::sip::password(&ProcessEnv).filter(|password| {
        let fits = crate::sip::password_fits(password);
        if !fits {
            eprintln!(
                "cap4: the SIP password ({} or the {} credential) has a character Baresip's account line cannot carry \
                 (';', ',', quotes, angle brackets, whitespace or a control character): registering without it",
                crate::sip::PASSWORD_ENV,
                crate::sip::PASSWORD_CREDENTIAL
            );
        }
        fits
    });
    if sip.account.is_some() && password.is_none() && sip.register_interval_s > 0 {
        eprintln!(
            "cap4: [sip] account has no password ({} or the {} credential); registering without one",
            crate::sip::PASSWORD_ENV,
            crate::sip::PASSWORD_CREDENTIAL
        );
    }
    match crate::sip::write_baresip_config(&sip, password.as_ref(), base, out) {
        Ok(()) => {
            let account = sip.account.as_deref().unwrap_or("the base accounts file");
            let _ = emit(&format!("{}: Baresip config and accounts written ({account})\n", out.display()));
            exit::OK
        }
        Err(err) => {
            eprintln!("cap4: {err}");
            exit::CANT_CREATE
        }
    }
}

fn api_command(call: ApiCall, api: Option<String>, json_out: bool) -> Result<(), Failure> {
    let addr = api.or_else(|| std::env::var("CAP4_API").ok().filter(|v| !v.is_empty())).unwrap_or_else(|| "127.0.0.1:8000".into());
    let token = std::env::var(API_TOKEN_ENV).ok().filter(|v| !v.is_empty());
    let (method, path, body) = match &call {
        ApiCall::Dial { number } => (Method::POST, "/api/calls/dial".to_string(), Some(json!({ "phone_number": number }))),
        ApiCall::Calls { limit, before } => {
            let mut query = Vec::new();
            if let Some(limit) = limit {
                query.push(format!("limit={}", encode_query(limit)));
            }
            if let Some(before) = before {
                query.push(format!("before={}", encode_query(before)));
            }
            let path = if query.is_empty() { "/api/calls".to_string() } else { format!("/api/calls?{}", query.join("&")) };
            (Method::GET, path, None)
        }
        ApiCall::Show { id } => (Method::GET, format!("/api/calls/{}", encode_path(id)), None),
        ApiCall::Health => (Method::GET, "/api/health".to_string(), None),
        ApiCall::RunPlan { name } => (Method::POST, format!("/api/plans/{}/run", encode_path(name)), Some(json!({}))),
        ApiCall::ShowRun { id } => (Method::GET, format!("/api/plans/runs/{}", encode_path(id)), None),
        ApiCall::CancelRun { id } => (Method::POST, format!("/api/plans/runs/{}/cancel", encode_path(id)), Some(json!({}))),
        ApiCall::Runs => (Method::GET, "/api/plans/runs".to_string(), None),
        ApiCall::Hangup { id } => {
            let id = match id {
                Some(id) => id.clone(),
                None => active_call(&addr, token.as_deref())?,
            };
            (Method::POST, format!("/api/calls/{}/hangup", encode_path(&id)), None)
        }
    };
    let value = request(&addr, method, &path, body, token.as_deref())?;
    let output = match call {
        ApiCall::Calls { .. } if !json_out => format_calls(&value),
        ApiCall::Show { .. } if !json_out => format_call(&value),
        _ => format!("{}\n", serde_json::to_string_pretty(&value).unwrap_or_default()),
    };
    emit(&output).map_err(stdout_failure)
}

/// Writes `text` to standard output. A reader that stops early (`cap4 show ID |
/// grep -q ended`) is not an error: like ripgrep, we stop quietly with success
/// instead of panicking on the broken pipe as `println!` would.
pub(crate) fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn request(addr: &str, method: Method, path: &str, body: Option<Value>, token: Option<&str>) -> Result<Value, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Failure(exit::FAILURE, e.to_string()))?;
    let (status, bytes) = runtime.block_on(api_client::call(addr, method, path, body, token)).map_err(|e| match e {
        HttpError::Connect { .. } => {
            Failure(exit::UNAVAILABLE, format!("cannot reach the cap4 daemon: {e} (is `cap4 run` running? use --api HOST:PORT)"))
        }
        _ => Failure(exit::FAILURE, format!("talking to the cap4 daemon: {e}")),
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|_| Failure(exit::FAILURE, format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))))?;
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        let message = value["error"]["message"].as_str().unwrap_or("request failed");
        let code = value["error"]["code"].as_str().unwrap_or("error");
        Err(Failure(exit::FAILURE, format!("{message} (HTTP {status}, {code})")))
    }
}

fn active_call(addr: &str, token: Option<&str>) -> Result<String, Failure> {
    let health = request(addr, Method::GET, "/api/health", None, token)?;
    health["active_call"].as_str().map(str::to_owned).ok_or_else(|| Failure(exit::FAILURE, "no active call".into()))
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn format_calls(value: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "{:<36}  {:<24}  {:<16}  {:<11}  {:<13}  REASON", "ID", "STARTED", "NUMBER", "STATUS", "OUTCOME");
    for c in value.as_array().map(Vec::as_slice).unwrap_or_default() {
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:<16}  {:<11}  {:<13}  {}",
            text(&c["id"]),
            text(&c["started_at"]),
            text(&c["phone_number"]),
            text(&c["status"]),
            text(&c["outcome"]),
            text(&c["reason"])
        );
    }
    out
}

fn format_call(c: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "call {}  to {}", text(&c["id"]), text(&c["phone_number"]));
    let _ = writeln!(out, "  status {}  outcome {}  reason {}", text(&c["status"]), text(&c["outcome"]), text(&c["reason"]));
    let _ = writeln!(out, "  started {}  answered {}  ended {}", text(&c["started_at"]), text(&c["answered_at"]), text(&c["ended_at"]));
    if c["answer"].is_object() {
        let a = &c["answer"];
        let _ = writeln!(out, "  answer {} ({}) after {} ms", text(&a["verdict"]), text(&a["cause"]), text(&a["decided_at_ms"]));
    }
    if c["ai"].is_object() {
        let ai = &c["ai"];
        let _ = writeln!(
            out,
            "  agent {}  running after {} ms  {} s  ended: {}",
            text(&ai["provider"]),
            text(&ai["setup_ms"]),
            text(&ai["seconds"]),
            text(&ai["end_reason"])
        );
    }
    if c["audio"].is_object() {
        // What a technician looks at first when a caller says the line broke up.
        let a = &c["audio"];
        let _ = writeln!(
            out,
            "  audio xruns {} capture / {} playback  stalls {}  underruns {}  longest wake-up gap {} ms  peak in {} / out {} dBFS",
            text(&a["capture_xruns"]),
            text(&a["playback_xruns"]),
            text(&a["stalls"]),
            text(&a["underruns"]),
            text(&a["longest_wakeup_gap_ms"]),
            text(&a["peak_in_dbfs"]),
            text(&a["peak_out_dbfs"])
        );
    }
    for entry in c["timeline"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let detail = entry["detail"].as_str().map(|d| format!("  {d}")).unwrap_or_default();
        let _ = writeln!(out, "  {:>8} ms  {}{}", text(&entry["at_ms"]), text(&entry["event"]), detail);
    }
    let transcript = c["transcript"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !transcript.is_empty() {
        let _ = writeln!(out, "  transcript:");
        for line in transcript {
            let _ = writeln!(out, "  {:>8} ms  {:<16}  {}", text(&line["at_ms"]), text(&line["speaker"]), text(&line["text"]));
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters.
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn encode_path(s: &str) -> String {
    encode_query(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Command, Failure> {
        parse(line.split_whitespace().map(str::to_owned).collect())
    }

    #[test]
    fn the_command_line_is_parsed_once_into_a_command() {
        assert_eq!(parsed("run --config /etc/cap4/cap4.toml"), Ok(Command::Run { config: "/etc/cap4/cap4.toml".into() }));
        assert_eq!(parsed("check-config x.toml"), Ok(Command::CheckConfig { config: "x.toml".into() }));
        assert_eq!(
            parsed("baresip-config --out /run/b"),
            Ok(Command::BaresipConfig { config: "/etc/cap4/cap4.toml".into(), base: "/etc/cap4/baresip".into(), out: "/run/b".into() })
        );
        assert_eq!(
            parsed("dial +15550100 --api 127.0.0.1:9000"),
            Ok(Command::Api { call: ApiCall::Dial { number: "+15550100".into() }, api: Some("127.0.0.1:9000".into()), json: false })
        );
        assert_eq!(
            parsed("calls --limit 5"),
            Ok(Command::Api { call: ApiCall::Calls { limit: Some("5".into()), before: None }, api: None, json: false })
        );
        assert_eq!(parsed("show --json c1"), Ok(Command::Api { call: ApiCall::Show { id: "c1".into() }, api: None, json: true }));
        assert_eq!(parsed("hangup"), Ok(Command::Api { call: ApiCall::Hangup { id: None }, api: None, json: false }));
        assert_eq!(parsed("amd --amd-config t.toml a.wav"), Ok(Command::Amd { file: "a.wav".into(), amd_config: Some("t.toml".into()) }));
        assert_eq!(parsed("--version"), Ok(Command::Version));
        let api = |call| Ok(Command::Api { call, api: None, json: false });
        assert_eq!(parsed("plan run help"), api(ApiCall::RunPlan { name: "help".into() }));
        assert_eq!(parsed("plan show r1"), api(ApiCall::ShowRun { id: "r1".into() }));
        assert_eq!(parsed("plan cancel r1"), api(ApiCall::CancelRun { id: "r1".into() }));
        assert_eq!(parsed("plan runs"), api(ApiCall::Runs));
    }

    #[test]
    fn bad_command_lines_are_usage_errors_naming_what_is_wrong() {
        for (line, says) in [
            ("", "no command"),
            ("frobnicate", "unknown command `frobnicate`"),
            ("dial", "dial needs NUMBER"),
            ("run", "run needs --config PATH"),
            ("amd", "amd needs FILE.wav"),
            ("show c1 c2", "unexpected arguments: c2"),
            ("health --bogus", "unexpected arguments: --bogus"),
            ("plan", "plan needs run NAME, show ID, cancel ID or runs"),
            ("plan run", "plan run needs NAME"),
            ("plan stop r1", "unknown plan command `stop`"),
        ] {
            assert_eq!(parsed(line), Err(Failure(exit::USAGE, says.into())), "{line:?}");
        }
    }

    #[test]
    fn show_prints_the_audio_figures_when_the_call_had_audio() {
        let with = serde_json::json!({
            "id": "c1", "phone_number": "+15550100", "status": "ended",
            "audio": {"capture_xruns": 0, "playback_xruns": 2, "stalls": 1, "underruns": 1, "longest_wakeup_gap_ms": 41,
                      "peak_in_dbfs": -12.5, "peak_out_dbfs": -6.0}
        });
        let out = format_call(&with);
        assert!(out.contains("audio xruns 0 capture / 2 playback  stalls 1  underruns 1  longest wake-up gap 41 ms"), "{out}");
        let without = serde_json::json!({"id": "c2", "phone_number": "+15550100", "status": "ended"});
        assert!(!format_call(&without).contains("audio"), "no audio line for a call without audio");
    }
}
