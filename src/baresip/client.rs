//! The daemon's one `ctrl_tcp` connection to Baresip (Baresip serves one client at
//! a time: a second connection kicks the first out, so nothing else may connect).
//!
//! Owns the socket. Promises:
//! * commands go out one at a time, each as one write with a unique string token,
//!   and each ends in exactly one [`Report::CommandDone`]: its response, a timeout
//!   (Baresip does not answer input it rejects), or a link error;
//! * everything Baresip sends is reported in wire order, so a `CALL_CLOSED` raised by
//!   a `hangup` reaches the controller before that hangup's response;
//! * `TCP_QUICKACK` is re-armed after every read (Baresip leaves Nagle on: without
//!   it a second frame written right after the first stalls ~40 ms);
//! * a lost connection is reported once, then retried with capped exponential
//!   backoff; every new connection starts with a resync (`listcalls`, `callstat`,
//!   `reginfo`)
//!   reported as [`Report::LinkUp`] before any event of that connection;
//! * a payload that is not a message we understand is logged and skipped; a framing
//!   error (the byte stream can no longer be trusted) drops and re-opens the link.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{debug, info, warn};

use super::netstring::{self, Decoder};
use super::protocol::{self, Command, CommandName, Event, Inbound, Response, parse_callstat_id, parse_listcalls};
use crate::baresip::link::{CommandError, CommandTag, Resync};
use crate::baresip::registration;

/// Settings for the connection.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of Baresip's `ctrl_tcp_listen`.
    pub addr: String,
    pub command_timeout: Duration,
    pub max_frame: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// What the client tells the controller, in the order it happened.
#[derive(Debug)]
pub enum Report {
    LinkUp(Resync),
    LinkDown { reason: String },
    Event(Event),
    CommandDone { tag: CommandTag, result: Result<Response, CommandError> },
}

/// A command for Baresip and the tag its [`Report::CommandDone`] will carry.
#[derive(Debug)]
pub struct Request {
    pub command: Command,
    pub tag: CommandTag,
}

/// Starts the client task. Requests go in through the returned sender; reports come
/// out through `reports`. The task ends when either channel closes.
pub fn spawn(config: ClientConfig, reports: mpsc::Sender<Report>) -> mpsc::UnboundedSender<Request> {
    // Unbounded: the controller must never wait on this task, which may itself be
    // waiting to hand the controller a report. Requests are a handful per call.
    let (requests_tx, requests_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(config, requests_rx, reports));
    requests_tx
}

/// Why a session ended.
enum SessionEnd {
    /// The link is gone; reconnect.
    Lost(String),
    /// Our owner went away; stop.
    Shutdown,
}

/// What a command in flight was for.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Controller(CommandTag),
    ResyncList,
    ResyncStat,
    ResyncReg,
}

/// A link that lasted this long resets the reconnect backoff.
const STABLE_LINK: Duration = Duration::from_secs(5);

struct InFlight {
    token: String,
    purpose: Purpose,
    deadline: Instant,
}

async fn run(config: ClientConfig, mut requests: mpsc::UnboundedReceiver<Request>, reports: mpsc::Sender<Report>) {
    let mut backoff = config.backoff_min;
    let mut next_token: u64 = 0;
    let mut warned = false;
    loop {
        let connect = tokio::select! {
            res = timeout(Duration::from_secs(5), TcpStream::connect(&config.addr)) => res,
            // Refuse requests while there is no link rather than queueing them.
            req = requests.recv() => match req {
                Some(req) => {
                    if refuse(&reports, req, CommandError::NotConnected).await.is_err() { return; }
                    continue;
                }
                None => return,
            },
        };
        let stream = match connect {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                log_connect_failure(&config.addr, &err.to_string(), backoff, &mut warned);
                if wait_refusing(&mut requests, &reports, backoff).await.is_err() {
                    return;
                }
                backoff = (backoff * 2).min(config.backoff_max);
                continue;
            }
            Err(_) => {
                log_connect_failure(&config.addr, "connect timed out", backoff, &mut warned);
                backoff = (backoff * 2).min(config.backoff_max);
                continue;
            }
        };
        warned = false;
        info!(addr = %config.addr, "connected to Baresip ctrl_tcp");
        let _ = stream.set_nodelay(true);
        let mut session = Session { config: &config, stream, reports: &reports, next_token: &mut next_token, linked: None };
        let end = session.run(&mut requests).await;
        let linked_at = session.linked;
        let linked = linked_at.is_some();
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::Lost(reason) => {
                warn!(addr = %config.addr, %reason, "Baresip ctrl_tcp link lost; reconnecting");
                // Only a link that was up goes down; a connection that never got
                // through its resync keeps backing off instead of flapping.
                // A link that held for a while earns a quick reconnect; one that
                // drops at once (another ctrl_tcp client kicking us out, a Baresip
                // that breaks on every resync) keeps backing off instead of flapping.
                let stable = linked_at.is_some_and(|at| at.elapsed() >= STABLE_LINK);
                if linked && !stable {
                    warn!("the link dropped right after connecting: is another ctrl_tcp client connected to Baresip?");
                }
                if linked && reports.send(Report::LinkDown { reason }).await.is_err() {
                    return;
                }
                if stable {
                    backoff = config.backoff_min;
                }
                if wait_refusing(&mut requests, &reports, backoff).await.is_err() {
                    return;
                }
                if !stable {
                    backoff = (backoff * 2).min(config.backoff_max);
                }
            }
        }
    }
}

fn log_connect_failure(addr: &str, err: &str, retry_in: Duration, warned: &mut bool) {
    if *warned {
        debug!(%addr, %err, retry_in_ms = retry_in.as_millis() as u64, "Baresip ctrl_tcp still not reachable");
    } else {
        warn!(%addr, %err, retry_in_ms = retry_in.as_millis() as u64, "Baresip ctrl_tcp not reachable; retrying");
        *warned = true;
    }
}

/// The controller dropped its end: the client task has no one to work for.
#[derive(Debug)]
struct ControllerGone;

async fn refuse(reports: &mpsc::Sender<Report>, req: Request, err: CommandError) -> Result<(), ControllerGone> {
    debug!(command = req.command.name.as_str(), ?err, "command not sent");
    reports.send(Report::CommandDone { tag: req.tag, result: Err(err) }).await.map_err(|_| ControllerGone)
}

/// Sleeps for `delay`, answering requests with `NotConnected` meanwhile.
async fn wait_refusing(
    requests: &mut mpsc::UnboundedReceiver<Request>,
    reports: &mpsc::Sender<Report>,
    delay: Duration,
) -> Result<(), ControllerGone> {
    let until = Instant::now() + delay;
    loop {
        tokio::select! {
            () = sleep_until(until) => return Ok(()),
            req = requests.recv() => match req {
                Some(req) => refuse(reports, req, CommandError::NotConnected).await?,
                None => return Err(ControllerGone),
            },
        }
    }
}

struct Session<'a> {
    config: &'a ClientConfig,
    stream: TcpStream,
    reports: &'a mpsc::Sender<Report>,
    next_token: &'a mut u64,
    /// When `LinkUp` was reported on this connection.
    linked: Option<Instant>,
}

/// Events held back while a resync runs (a call makes a handful): more, and
/// the peer is not a Baresip to trust; the link is dropped and made again.
const MAX_HELD_EVENTS: usize = 256;

impl Session<'_> {
    async fn run(&mut self, requests: &mut mpsc::UnboundedReceiver<Request>) -> SessionEnd {
        let mut decoder = Decoder::new(self.config.max_frame);
        let mut queue: VecDeque<Request> = VecDeque::new();
        let mut in_flight: Option<InFlight> = None;
        // Events seen before the resync finishes are held back, so the controller
        // hears LinkUp first.
        let mut held: Option<Vec<Event>> = Some(Vec::new());
        let mut resync = Resync::default();
        let mut buf = [0u8; 4096];

        if let Err(end) = self.send(&mut in_flight, Command { name: CommandName::ListCalls, params: None }, Purpose::ResyncList).await {
            return end;
        }
        let end = loop {
            if in_flight.is_none() && held.is_none() {
                if let Some(req) = queue.pop_front() {
                    if let Err(end) = self.send(&mut in_flight, req.command, Purpose::Controller(req.tag)).await {
                        break end;
                    }
                }
            }
            let deadline = in_flight.as_ref().map(|f| f.deadline);
            tokio::select! {
                read = self.stream.read(&mut buf) => {
                    let n = match read {
                        Ok(0) => break SessionEnd::Lost("Baresip closed the connection".into()),
                        Ok(n) => n,
                        Err(err) => break SessionEnd::Lost(format!("read failed: {err}")),
                    };
                    // Linux clears QUICKACK after ACKing; re-arm it on every read.
                    let _ = socket2::SockRef::from(&self.stream).set_quickack(true);
                    decoder.push(&buf[..n]);
                    match self.drain(&mut decoder, &mut in_flight, &mut held, &mut resync).await {
                        Ok(()) => {}
                        Err(end) => break end,
                    }
                }
                req = requests.recv() => match req {
                    Some(req) => queue.push_back(req),
                    None => break SessionEnd::Shutdown,
                },
                () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    if let Some(flight) = in_flight.take() {
                        warn!(token = %flight.token, "Baresip did not answer a command in time");
                        match self.finish(flight.purpose, Err(CommandError::Timeout), &mut in_flight, &mut held, &mut resync).await {
                            Ok(()) => {}
                            Err(end) => break end,
                        }
                    }
                }
            }
        };
        // Nothing in flight or queued will be answered on this connection.
        if let Some(InFlight { purpose: Purpose::Controller(tag), .. }) = in_flight {
            let _ = self.reports.send(Report::CommandDone { tag, result: Err(CommandError::LinkLost) }).await;
        }
        for req in queue {
            let _ = self.reports.send(Report::CommandDone { tag: req.tag, result: Err(CommandError::LinkLost) }).await;
        }
        end
    }

    async fn send(&mut self, in_flight: &mut Option<InFlight>, command: Command, purpose: Purpose) -> Result<(), SessionEnd> {
        *self.next_token += 1;
        let token = format!("cap4-{}", self.next_token);
        let frame = netstring::encode(&command.to_json(&token));
        debug!(command = command.name.as_str(), params = command.params.as_deref().unwrap_or(""), %token, "-> Baresip");
        self.stream.write_all(&frame).await.map_err(|err| SessionEnd::Lost(format!("write failed: {err}")))?;
        *in_flight = Some(InFlight { token, purpose, deadline: Instant::now() + self.config.command_timeout });
        Ok(())
    }

    /// Handles every complete frame in the decoder.
    async fn drain(
        &mut self,
        decoder: &mut Decoder,
        in_flight: &mut Option<InFlight>,
        held: &mut Option<Vec<Event>>,
        resync: &mut Resync,
    ) -> Result<(), SessionEnd> {
        loop {
            let payload = match decoder.next_frame() {
                Ok(Some(payload)) => payload,
                Ok(None) => return Ok(()),
                Err(err) => return Err(SessionEnd::Lost(format!("framing error from Baresip: {err}"))),
            };
            match protocol::decode(&payload) {
                Ok(Inbound::Event(event)) => {
                    debug!(
                        event = event.kind.as_str(),
                        id = event.call_id.as_deref().unwrap_or(""),
                        param = event.param.as_deref().unwrap_or(""),
                        "<- Baresip"
                    );
                    match held {
                        Some(events) if events.len() >= MAX_HELD_EVENTS => {
                            // No resync sees that many: a peer flooding us. Start over.
                            return Err(SessionEnd::Lost(format!("more than {MAX_HELD_EVENTS} events during the resync")));
                        }
                        Some(events) => events.push(event),
                        None => self.report(Report::Event(event)).await?,
                    }
                }
                Ok(Inbound::Response(resp)) => {
                    let matches = in_flight.as_ref().is_some_and(|f| resp.token.as_deref() == Some(f.token.as_str()));
                    if !matches {
                        warn!(token = resp.token.as_deref().unwrap_or(""), "response to no command in flight; dropped");
                        continue;
                    }
                    if let Some(flight) = in_flight.take() {
                        debug!(token = %flight.token, ok = resp.ok, "<- Baresip response");
                        self.finish(flight.purpose, Ok(resp), in_flight, held, resync).await?;
                    }
                }
                Ok(Inbound::SipMessage) => debug!("SIP MESSAGE from Baresip ignored"),
                Err(err) => {
                    let shown = String::from_utf8_lossy(&payload[..payload.len().min(120)]).into_owned();
                    warn!(%err, payload = %shown, "unusable message from Baresip skipped");
                }
            }
        }
    }

    /// A command completed (or timed out): report it, or advance the resync.
    async fn finish(
        &mut self,
        purpose: Purpose,
        result: Result<Response, CommandError>,
        in_flight: &mut Option<InFlight>,
        held: &mut Option<Vec<Event>>,
        resync: &mut Resync,
    ) -> Result<(), SessionEnd> {
        match purpose {
            Purpose::Controller(tag) => self.report(Report::CommandDone { tag, result }).await,
            Purpose::ResyncList => {
                // Unreadable (another version's wording): fall back on callstat alone.
                match result.ok().filter(|r| r.ok).and_then(|r| parse_listcalls(&r.data)) {
                    Some(calls) => resync.calls = calls,
                    None => {
                        warn!("could not read Baresip's listcalls answer; resyncing from callstat alone");
                        resync.calls_unknown = true;
                    }
                }
                self.send(in_flight, Command { name: CommandName::CallStat, params: None }, Purpose::ResyncStat).await
            }
            Purpose::ResyncStat => {
                resync.current_call_id = result.ok().and_then(|r| parse_callstat_id(&r.data));
                if resync.calls_unknown && resync.current_call_id.is_some() {
                    resync.calls = vec![protocol::ListedCall { state: "UNKNOWN".into(), peer_uri: String::new() }];
                }
                // Baresip registers at its start, before we connect, and replays no event.
                self.send(in_flight, Command { name: CommandName::RegInfo, params: None }, Purpose::ResyncReg).await
            }
            Purpose::ResyncReg => {
                resync.registrations = result.ok().filter(|r| r.ok).map(|r| registration::parse_reginfo(&r.data));
                if resync.registrations.is_none() {
                    warn!("could not read Baresip's reginfo answer; the registrations known stand");
                }
                info!(calls = resync.calls.len(), current = resync.current_call_id.as_deref().unwrap_or(""), "Baresip resynchronised");
                self.report(Report::LinkUp(std::mem::take(resync))).await?;
                self.linked = Some(Instant::now());
                for event in held.take().unwrap_or_default() {
                    self.report(Report::Event(event)).await?;
                }
                Ok(())
            }
        }
    }

    async fn report(&self, report: Report) -> Result<(), SessionEnd> {
        self.reports.send(report).await.map_err(|_| SessionEnd::Shutdown)
    }
}
