//! Plan runs and the webhook against the real parts: Debian's Baresip 1.0.0
//! driven by a real `cap4 run`, a SIPp per number as the remote phones, and
//! a local HTTP receiver for the webhook. Each number of a plan is a SIPp's
//! port (`dial_uri = "sip:cap4@127.0.0.1:{number}"`), so the test knows which
//! phone each attempt rang.

use crate::support;
use crate::support::daemon;

use std::time::Duration;

use daemon::{Daemon, DaemonConfig};
use serde_json::Value;
use support::webhook_receiver::{Received, Receiver};
use support::{Baresip, Sipp, TempDir, free_media_port, free_port, free_rtp_range, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "test-webhook-secret-0123456789";

struct Bench {
    phones: Vec<Sipp>,
    cap4: Daemon,
    _baresip: Baresip,
    // Last, so the folder outlives the processes writing into it.
    dir: TempDir,
}

/// One SIPp per `(scenario, calls)`, a Baresip, and a cap4 with a plan
/// `help` over those phones (`plan` is the rest of its table) and a webhook
/// to `receiver`.
fn bench(name: &str, phones: &[(&str, u32)], plan: &str, receiver: Option<&Receiver>) -> Bench {
    let dir = TempDir::new(name);
    let phones: Vec<Sipp> = phones
        .iter()
        .map(|(scenario, calls)| Sipp::start_for(dir.path(), scenario, free_port(), free_media_port(), *calls).expect("start SIPp"))
        .collect();
    let baresip = Baresip::start(dir.path(), free_port(), free_port(), free_rtp_range(20)).expect("start Baresip");
    let mut cfg = DaemonConfig::new(baresip.ctrl_port(), "sip:cap4@127.0.0.1:{number}".into());
    let numbers: Vec<String> = phones.iter().map(|p| format!("\"{}\"", p.port())).collect();
    cfg.extra = format!("[[plan]]\nname = \"help\"\nnumbers = [{}]\n{plan}\n", numbers.join(", "));
    if let Some(receiver) = receiver {
        cfg.extra.push_str(&format!("[webhook]\nurl = \"{}\"\n", receiver.url()));
        cfg.extra_env.push(("CAP4_WEBHOOK_SECRET".into(), SECRET.into()));
    }
    let cap4 = Daemon::start(dir.path(), &cfg);
    cap4.wait_baresip_connected(WAIT);
    Bench { phones, cap4, _baresip: baresip, dir }
}

fn run_plan(cap4: &Daemon) -> String {
    let (status, run) = cap4.http("POST", "/api/plans/help/run", Some("{}"));
    assert_eq!(status, 201, "{run}\nlog:\n{}", cap4.log());
    assert_eq!((run["plan"].as_str(), run["state"].as_str()), (Some("help"), Some("running")));
    run["id"].as_str().expect("run id").to_string()
}

fn get_run(cap4: &Daemon, id: &str) -> Value {
    let (status, run) = cap4.http("GET", &format!("/api/plans/runs/{id}"), None);
    assert_eq!(status, 200, "{run}");
    run
}

/// Waits until `check` holds for the run; the run.
fn wait_run(cap4: &Daemon, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut run = Value::Null;
    let ok = wait_until(WAIT, Duration::from_millis(100), || {
        run = get_run(cap4, id);
        check(&run)
    });
    assert!(ok, "run never {what}: {run:#}\nlog:\n{}", cap4.log());
    run
}

fn calls_of(run: &Value) -> Vec<String> {
    run["calls"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(str::to_owned)).collect()
}

fn results_of(run: &Value) -> Vec<String> {
    run["attempts"].as_array().into_iter().flatten().map(|a| a["result"].as_str().unwrap_or("-").to_string()).collect()
}

/// What the receiver must check of every request it got.
fn assert_signed(received: &[Received]) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    for r in received {
        let signature = r.headers.get("x-cap4-signature").and_then(|s| s.strip_prefix("sha256=")).expect("a signature");
        let tag: Vec<u8> = (0..signature.len() / 2).map(|i| u8::from_str_radix(&signature[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
        assert!(ring::hmac::verify(&key, &r.body, &tag).is_ok(), "bad signature on {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.headers.get("idempotency-key").map(String::as_str), r.json()["id"].as_str(), "the key is the record's id");
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    }
}

/// Waits until the receiver accepted `ids`; asserts each exactly once.
fn wait_accepted(receiver: &Receiver, ids: &[&str], cap4: &Daemon) -> Vec<Received> {
    let ok = wait_until(WAIT, Duration::from_millis(100), || {
        let accepted = receiver.accepted();
        ids.iter().all(|id| accepted.iter().any(|r| r.json()["id"] == *id))
    });
    assert!(
        ok,
        "not every delivery arrived: {:?}\nlog:\n{}",
        receiver.received().iter().map(Received::json).collect::<Vec<_>>(),
        cap4.log()
    );
    // Nothing more may follow: give a late repeat the time to come.
    std::thread::sleep(Duration::from_millis(1500));
    let accepted = receiver.accepted();
    for id in ids {
        assert_eq!(accepted.iter().filter(|r| r.json()["id"] == *id).count(), 1, "one accepted delivery for {id}");
    }
    accepted
}

#[test]
fn a_busy_first_number_then_an_answer_ends_done_and_each_end_reaches_a_flaky_webhook_once() {
    let receiver = Receiver::start(2);
    let mut b = bench("plan-done", &[("busy_486.xml", 1), ("answer_then_remote_bye.xml", 1)], "attempts = 2\nretry_s = 1", Some(&receiver));
    let id = run_plan(&b.cap4);
    let run = wait_run(&b.cap4, &id, "done", |r| r["state"] == "done");
    let calls = calls_of(&run);
    assert_eq!(results_of(&run), ["busy", "success"]);
    assert_eq!(calls.len(), 2);
    let first = b.cap4.call(&calls[0]);
    let second = b.cap4.call(&calls[1]);
    assert_eq!(
        (first["outcome"].as_str(), first["attempt"].as_u64(), first["plan_run"].as_str()),
        (Some("busy"), Some(1), Some(id.as_str()))
    );
    assert_eq!((second["outcome"].as_str(), second["attempt"].as_u64()), (Some("remote_hangup"), Some(2)));
    assert_eq!(first["phone_number"].as_str(), Some(b.phones[0].port().to_string().as_str()), "attempt 1 rang the first phone");
    assert_eq!(second["phone_number"].as_str(), Some(b.phones[1].port().to_string().as_str()), "attempt 2 rang the second");
    for phone in &mut b.phones {
        assert!(phone.wait_exit(WAIT).is_some_and(|s| s.success()), "{} did not see its call through", phone.scenario());
    }
    let accepted = wait_accepted(&receiver, &[&calls[0], &calls[1], &id], &b.cap4);
    let received = receiver.received();
    assert_signed(&received);
    assert_eq!(received.iter().filter(|r| r.answered == 503).count(), 2, "the first two were refused, then sent again");
    let run_delivery = accepted.iter().find(|r| r.json()["id"] == id.as_str()).expect("the run's delivery").json();
    assert_eq!((run_delivery["type"].as_str(), run_delivery["state"].as_str()), (Some("plan_run"), Some("done")));
    let call_delivery = accepted.iter().find(|r| r.json()["id"] == calls[1].as_str()).expect("the call's delivery").json();
    assert_eq!((call_delivery["type"].as_str(), call_delivery["status"].as_str()), (Some("call"), Some("ended")));
    eprintln!("plan run record:\n{run:#}");
    for r in &received {
        eprintln!(
            "webhook got ({}): {} {}",
            r.answered,
            r.headers.get("x-cap4-signature").map_or("", String::as_str),
            String::from_utf8_lossy(&r.body)
        );
    }
    drop(b.dir);
}

#[test]
fn a_plan_busy_every_time_is_exhausted_after_numbers_times_rounds() {
    let b = bench("plan-exhausted", &[("busy_486.xml", 2), ("busy_486.xml", 2)], "attempts = 2\nretry_s = { busy = 0 }", None);
    let id = run_plan(&b.cap4);
    let run = wait_run(&b.cap4, &id, "exhausted", |r| r["state"] == "exhausted");
    assert_eq!(results_of(&run), ["busy", "busy", "busy", "busy"]);
    let numbers: Vec<String> = calls_of(&run).iter().map(|c| b.cap4.call(c)["phone_number"].as_str().unwrap_or("").to_string()).collect();
    let (a, z) = (b.phones[0].port().to_string(), b.phones[1].port().to_string());
    assert_eq!(numbers, [a.clone(), z.clone(), a, z], "in order, round after round");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(calls_of(&get_run(&b.cap4, &id)).len(), 4, "no call after the last attempt");
}

#[test]
fn cancel_during_ringing_ends_the_call_within_5_s_and_places_no_more() {
    let b = bench("plan-cancel", &[("ring_forever.xml", 1)], "attempts = 3\nretry_s = 1", None);
    let id = run_plan(&b.cap4);
    let run = wait_run(&b.cap4, &id, "placed its call", |r| !calls_of(r).is_empty());
    let call = calls_of(&run)[0].clone();
    b.cap4.wait_status(&call, "ringing", WAIT);
    let (status, cancelled) = b.cap4.http("POST", &format!("/api/plans/runs/{id}/cancel"), Some("{}"));
    assert_eq!((status, cancelled["state"].as_str()), (200, Some("cancelled")), "{cancelled}");
    let ended = b.cap4.wait_status(&call, "ended", Duration::from_secs(5));
    assert_eq!(ended["outcome"], "local_hangup");
    let (status, again) = b.cap4.http("POST", &format!("/api/plans/runs/{id}/cancel"), Some("{}"));
    assert_eq!((status, again["error"]["code"].as_str()), (409, Some("plan_run_ended")));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(calls_of(&get_run(&b.cap4, &id)), [call], "no call after the cancel");
    assert_eq!(b.cap4.health()["plan_run"], Value::Null);
}

#[test]
fn a_restart_between_attempts_goes_on_to_done_and_delivers_what_was_waiting() {
    let receiver = Receiver::start(0);
    receiver.set_refusing(true);
    let mut b =
        bench("plan-restart", &[("busy_486.xml", 1), ("answer_then_remote_bye.xml", 1)], "attempts = 1\nretry_s = 4", Some(&receiver));
    let id = run_plan(&b.cap4);
    let pending = wait_run(&b.cap4, &id, "pending its second attempt", |r| results_of(r) == ["busy"]);
    assert!(pending["next_attempt_at"].is_string(), "{pending:#}");
    // A manual dial in the pause is refused: the run has the line.
    let (status, refused) = b.cap4.http("POST", "/api/calls/dial", Some(r#"{"phone_number": "+15550100"}"#));
    assert_eq!((status, refused["error"]["code"].as_str()), (409, Some("plan_pending")));
    assert!(wait_until(WAIT, Duration::from_millis(50), || !receiver.received().is_empty()), "the busy call's delivery was tried");
    b.cap4.kill9();
    receiver.set_refusing(false);
    b.cap4.restart();
    b.cap4.wait_baresip_connected(WAIT);
    let run = wait_run(&b.cap4, &id, "done after the restart", |r| r["state"] == "done");
    assert_eq!(results_of(&run), ["busy", "success"]);
    let calls = calls_of(&run);
    assert!(b.cap4.log().contains("plan run goes on"), "the restart said so");
    assert!(b.phones[1].wait_exit(WAIT).is_some_and(|s| s.success()), "the second phone took its call");
    wait_accepted(&receiver, &[&calls[0], &calls[1], &id], &b.cap4);
    assert_signed(&receiver.received());
}

#[test]
fn a_call_ended_by_a_stop_reaches_the_webhook_after_the_restart() {
    let receiver = Receiver::start(0);
    receiver.set_refusing(true);
    let mut b = bench("webhook-stop", &[("answer_wait_bye.xml", 1)], "", Some(&receiver));
    let id = b.cap4.dial(&b.phones[0].port().to_string())["id"].as_str().expect("id").to_string();
    b.cap4.wait_status(&id, "answered", WAIT);
    // SIGTERM hangs the call up; its record is final once its media session
    // has reported, and the daemon waits for that before it exits.
    assert_eq!(b.cap4.terminate(), Some(0), "a clean stop; log:\n{}", b.cap4.log());
    receiver.set_refusing(false);
    b.cap4.restart();
    let accepted = wait_accepted(&receiver, &[&id], &b.cap4);
    let delivered = accepted.iter().find(|r| r.json()["id"] == id.as_str()).expect("the call").json();
    assert_eq!((delivered["status"].as_str(), delivered["outcome"].as_str()), (Some("ended"), Some("local_hangup")), "{delivered}");
    assert_eq!(delivered["reason"], "hung up by shutdown");
    assert_signed(&receiver.received());
}
