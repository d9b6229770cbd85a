//! The controller: the one task that owns the call state machine and the call
//! history. Every source (Baresip reports, API requests, timers) sends it messages;
//! it feeds them to the machine and carries out the effects: records are persisted
//! before commands are sent and before anyone is answered.
//!
//! Promise: only this task decides what Baresip is told to do.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;
use tracing::{Span, debug, error, info, info_span, warn};

use crate::ai::ToolError;
use crate::baresip::client::{Report, Request};
use crate::baresip::link::{CommandError, CommandTag};
use crate::button::Press;
use crate::call::dtmf::Digits;
use crate::call::machine::{AiInput, AnswerPolicy, CallMachine, DialError, Effect, HangupError, Input, Timeouts};
use crate::call::record::{CallDirection, CallRecord, Status};
use crate::clock::{Clock, rfc3339};
use crate::config::Config;
use crate::config::DuringCall;
use crate::leds::{BRIEF, LedState, LedView};
use crate::liveness::Liveness;
use crate::phone::PhoneNumber;
use crate::plan::journal::{Loaded, RunJournal};
use crate::plan::{Attempt, CancelRefused, Plan, PlanRun, PlanRuns, StartRefused};
use crate::sd_notify::Notifier;
use crate::session::{self, Session, SessionMsg};
use crate::store::{Store, UnknownCursor};

pub use crate::worker::off_the_worker;

/// Requests from the HTTP API (and so from the CLI).
#[derive(Debug)]
pub enum ApiRequest {
    Dial {
        number: PhoneNumber,
        reply: oneshot::Sender<Result<CallRecord, DialRefusal>>,
    },
    Hangup {
        id: String,
        origin: String,
        reply: oneshot::Sender<Result<CallRecord, HangupRefusal>>,
    },
    Get {
        id: String,
        reply: oneshot::Sender<Option<CallRecord>>,
    },
    /// Where the call's recording is (`GET /api/calls/{id}/recording`).
    Recording {
        id: String,
        reply: oneshot::Sender<RecordingLookup>,
    },
    List {
        limit: usize,
        before: Option<String>,
        reply: oneshot::Sender<Result<Vec<CallRecord>, UnknownCursor>>,
    },
    Health {
        reply: oneshot::Sender<Health>,
    },
    RunPlan {
        name: String,
        reply: oneshot::Sender<Result<PlanRun, PlanRefusal>>,
    },
    GetRun {
        id: String,
        reply: oneshot::Sender<Option<PlanRun>>,
    },
    ListRuns {
        limit: usize,
        reply: oneshot::Sender<Vec<PlanRun>>,
    },
    CancelRun {
        id: String,
        reply: oneshot::Sender<Result<PlanRun, CancelRefused>>,
    },
}

/// What there is of a call's recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordingLookup {
    NoCall,
    /// The call was not recorded (or its recording is not written yet).
    NoRecording,
    File(std::path::PathBuf),
}

/// Why a plan run was not started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRefusal {
    /// No `[[plan]]` by that name; the names there are.
    UnknownPlan { known: Vec<String> },
    /// Another run is running (its id): one at a time, as calls are.
    AlreadyRunning(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialRefusal {
    Machine(DialError),
    /// The new call's record could not be saved, so the call was not placed.
    /// The dial's record could not be saved (`disk_full`: ENOSPC or EDQUOT).
    Storage {
        message: String,
        disk_full: bool,
    },
    /// A plan run waits for its next attempt (its id): cancel it first.
    PlanPending(String),
    /// A SIP account that registers is not registered: the call would fail.
    NotRegistered {
        aor: String,
        state: &'static str,
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum HangupRefusal {
    NotFound,
    /// The call has ended already.
    AlreadyEnded(Box<CallRecord>),
}

/// The daemon's state as `GET /api/health` shows it.
#[derive(Debug, Clone)]
pub struct Health {
    pub baresip_connected: bool,
    pub baresip_since: Option<String>,
    pub active_call: Option<String>,
    pub calls_recorded: usize,
    /// Why the journal is behind memory (a full disk), if it is.
    pub storage_error: Option<String>,
    /// The running plan run, if one is.
    pub plan_run: Option<String>,
    /// Webhook deliveries waiting, and dropped since start (`None`: no webhook).
    pub webhook: Option<(usize, u64)>,
    /// Each registering SIP account.
    pub sip_accounts: Vec<crate::baresip::registration::AccountReg>,
}

/// How long a graceful stop waits for an active call to be hung up.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// The loop turns at least this often (see [`Controller::liveness`]).
const HEARTBEAT: Duration = Duration::from_secs(1);

pub struct Controller {
    machine: CallMachine,
    store: Store,
    clock: Clock,
    config: Arc<Config>,
    baresip: mpsc::UnboundedSender<Request>,
    waiting_hangups: Vec<(String, oneshot::Sender<Result<CallRecord, HangupRefusal>>)>,
    baresip_since: Option<String>,
    /// Fired once, the first time Baresip is connected (for systemd READY).
    on_first_link: Option<oneshot::Sender<()>>,
    /// What the LEDs show now and what they fall back to after a brief pattern.
    leds: Option<tokio::sync::watch::Sender<LedView>>,
    notifier: Notifier,
    /// The answered call's media session (audio engine, classification, AI).
    session: Option<Session>,
    /// The agent a person's call is handed to (`None`: `[ai] enabled = false`).
    provider: Option<Arc<dyn crate::ai::Provider>>,
    session_tx: mpsc::Sender<SessionMsg>,
    session_rx: Option<mpsc::Receiver<SessionMsg>>,
    /// Calls whose media session has not reported `Done`: their record is
    /// final (for the webhook) only then.
    media_pending: std::collections::HashSet<String>,
    plans: PlanRuns,
    plan_journal: Option<RunJournal>,
    webhook: Option<crate::webhook::deliver::Webhook>,
    /// Marked at each turn of the loop and each wait on the disk; the
    /// watchdog pings by it (`liveness.rs`).
    liveness: Arc<Liveness>,
    /// Each registering SIP account's state (events and `reginfo`).
    registrations: crate::baresip::registration::Registrations,
    /// The agent's client tools that act on the call (`send_dtmf`,
    /// `transfer_call`) ask here.
    tool_rx: Option<mpsc::Receiver<ToolRequest>>,
    /// Their answers, by the machine's ticket.
    tool_replies: std::collections::HashMap<u64, ToolReply>,
    next_ticket: u64,
}

/// A registration event (it goes to the registrations, not the call machine).
fn is_registration(event: &crate::baresip::protocol::Event) -> bool {
    use crate::baresip::protocol::EventKind::*;
    matches!(event.kind, Registering | RegisterOk | RegisterFail | Unregistering)
}

/// Where a client tool waits for its answer.
type ToolReply = oneshot::Sender<Result<String, ToolError>>;

/// A client tool's request to the controller (from the provider's tool thread).
#[derive(Debug)]
pub enum ToolRequest {
    SendKeys {
        digits: Digits,
        reply: ToolReply,
    },
    /// To a number `[transfer] allow` admits (checked by the tool).
    Transfer {
        number: PhoneNumber,
        reply: ToolReply,
    },
}

/// The client tools the agent may call on a call: `send_dtmf` (`digits`:
/// `0-9 * #`, `w` a 0.5 s pause) and `transfer_call` (`number`, one of
/// `[transfer] allow`). Each runs on a blocking thread and waits for the
/// controller's answer.
fn call_tools(requests: mpsc::Sender<ToolRequest>, transfer: crate::call::transfer::TransferConfig) -> crate::ai::ClientTools {
    /// Asks the controller and waits; a dropped reply means the call (or the box) is gone.
    fn ask(
        requests: &mpsc::Sender<ToolRequest>,
        request: ToolRequest,
        answer: oneshot::Receiver<Result<String, ToolError>>,
    ) -> Result<String, ToolError> {
        requests.blocking_send(request).map_err(|_| ToolError::from("the box is stopping"))?;
        answer.blocking_recv().unwrap_or_else(|_| Err(ToolError::from("the call ended")))
    }
    let keys = requests.clone();
    crate::ai::ClientTools::new()
        .with("send_dtmf", move |params| {
            let text = params.get("digits").and_then(|d| d.as_str()).ok_or(ToolError::from("send_dtmf needs digits, a string"))?;
            let digits = Digits::parse(text).map_err(|e| ToolError(e.to_string()))?;
            let (reply, answer) = oneshot::channel();
            ask(&keys, ToolRequest::SendKeys { digits, reply }, answer)
        })
        .with("transfer_call", move |params| {
            let text = params.get("number").and_then(|d| d.as_str()).ok_or(ToolError::from("transfer_call needs number, a string"))?;
            let number = transfer.target(text).map_err(|e| ToolError(e.to_string()))?;
            let (reply, answer) = oneshot::channel();
            ask(&requests, ToolRequest::Transfer { number, reply }, answer)
        })
}

/// The controller's inputs besides Baresip's reports and the API.
pub struct Extras {
    pub presses: Option<mpsc::Receiver<Press>>,
    pub leds: Option<tokio::sync::watch::Sender<LedView>>,
}

impl Controller {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: Clock,
        baresip: mpsc::UnboundedSender<Request>,
        on_first_link: Option<oneshot::Sender<()>>,
    ) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let timeouts = Timeouts {
            ring_ms: ms(config.call.ring_timeout),
            max_call_ms: ms(config.call.max_duration),
            hangup_confirm_ms: ms(config.baresip.command_timeout).max(2_000),
            link_grace_ms: ms(config.call.link_grace),
        };
        let (session_tx, session_rx) = mpsc::channel(8);
        let policy = AnswerPolicy {
            classify: config.amd.enabled,
            hangup_on_unknown: config.amd.on_unknown == crate::amd::OnUnknown::Hangup,
            ai: config.ai.enabled,
            voicemail_drop: config.voicemail_message.is_some() && config.amd.enabled,
        };
        let (tool_tx, tool_rx) = mpsc::channel(4);
        let provider = if config.ai.enabled {
            match crate::ai::provider_from_config(&config.ai, config.ai_key.clone(), call_tools(tool_tx, config.transfer.clone())) {
                Ok(provider) => Some(provider),
                Err(err) => {
                    error!(%err, "AI provider unusable: calls answered by a person will be hung up");
                    None
                }
            }
        } else {
            None
        };
        Self {
            machine: CallMachine::new(timeouts).with_answer_policy(policy).with_incoming(config.incoming.clone()),
            provider,
            session: None,
            session_tx,
            session_rx: Some(session_rx),
            store,
            clock,
            config,
            baresip,
            waiting_hangups: Vec::new(),
            baresip_since: None,
            on_first_link,
            leds: None,
            notifier: Notifier::from_env(),
            media_pending: std::collections::HashSet::new(),
            plans: PlanRuns::default(),
            plan_journal: None,
            webhook: None,
            liveness: Liveness::new(),
            registrations: Default::default(),
            tool_rx: Some(tool_rx),
            tool_replies: std::collections::HashMap::new(),
            next_ticket: 0,
        }
    }

    /// What the watchdog task judges this controller's loop by.
    pub fn liveness(&self) -> Arc<Liveness> {
        self.liveness.clone()
    }

    /// The plan runs the journal had; resumed when [`Self::run`] starts.
    pub fn with_plans(mut self, journal: RunJournal, loaded: Loaded) -> Self {
        self.plans = PlanRuns::new(loaded.runs);
        self.plan_journal = Some(journal);
        self
    }

    /// Ended calls and runs go to this webhook's outbox; `interrupted`: the
    /// calls the store ended `failed` at open (cap4 stopped during them),
    /// whose records are final now.
    pub fn with_webhook(mut self, webhook: crate::webhook::deliver::Webhook, interrupted: &[String]) -> Self {
        self.webhook = Some(webhook);
        for id in interrupted {
            self.call_final(id);
        }
        self
    }

    /// Runs until `stop` resolves (then hangs up any active call, briefly) or the
    /// Baresip client goes away.
    pub async fn run(
        mut self,
        mut reports: mpsc::Receiver<Report>,
        mut api: mpsc::Receiver<ApiRequest>,
        extras: Extras,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        self.leds = extras.leds;
        self.update_leds(None);
        let mut presses = extras.presses;
        let mut sessions = self.session_rx.take();
        let mut tools = self.tool_rx.take();
        // The loop turns at least this often, so the watchdog task can tell
        // a quiet loop from a hung one.
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        let mut stop_by: Option<tokio::time::Instant> = None;
        let mut api_open = true;
        self.resume_plans();
        loop {
            self.liveness.turned();
            // At a stop, the last call's media session reports first: its
            // record is final (for the webhook) only then.
            if stop_by.is_some() && self.machine.active().is_none() && self.media_pending.is_empty() {
                break;
            }
            let call_deadline = self.machine.next_deadline().map(|ms| tokio::time::Instant::from_std(self.clock.instant_at(ms)));
            let deadline = match (call_deadline, self.plan_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wake = match (deadline, stop_by) {
                (Some(d), Some(s)) => Some(d.min(s)),
                (d, s) => d.or(s),
            };
            tokio::select! {
                report = reports.recv() => match report {
                    Some(report) => self.on_report(report),
                    None => break,
                },
                req = api.recv(), if stop_by.is_none() && api_open => match req {
                    Some(req) => self.on_api(req),
                    // The HTTP server may stop first on shutdown; keep going until
                    // the stop signal itself is handled.
                    None => api_open = false,
                },
                () = &mut stop, if stop_by.is_none() => {
                    info!("stopping");
                    stop_by = Some(tokio::time::Instant::now() + STOP_GRACE);
                    if let Some(id) = self.machine.active().map(|r| r.id.clone()) {
                        let now = self.clock.now();
                        if let Ok((_, effects)) = self.machine.hangup(&id, "shutdown", now) {
                            self.apply(effects);
                        }
                    }
                },
                Some(msg) = async { sessions.as_mut()?.recv().await }, if sessions.is_some() => self.on_session(msg),
                Some(req) = async { tools.as_mut()?.recv().await }, if tools.is_some() => self.on_tool(req),
                press = async { presses.as_mut()?.recv().await }, if presses.is_some() => match press {
                    Some(press) => self.on_press(press),
                    None => presses = None,
                },
                _ = heartbeat.tick() => {},
                () = sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {
                    if stop_by.is_some_and(|s| s <= tokio::time::Instant::now()) {
                        warn!("active call did not end in time; it will be recorded failed at next start");
                        break;
                    }
                    let effects = self.machine.handle(Input::Tick, self.clock.now());
                    self.apply(effects);
                }
            }
            if stop_by.is_none() {
                self.advance_plans();
            }
            self.update_leds(None);
        }
        // What did not report in time goes to the webhook as it is.
        for id in std::mem::take(&mut self.media_pending) {
            if self.store.get(&id).is_some_and(|r| !r.is_active()) {
                self.call_final(&id);
            }
        }
        self.notifier.stopping();
    }

    fn on_tool(&mut self, req: ToolRequest) {
        let span = self.call_span();
        let _guard = span.enter();
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let input = match req {
            ToolRequest::SendKeys { digits, reply } => {
                self.tool_replies.insert(ticket, reply);
                Input::SendKeys { ticket, digits }
            }
            ToolRequest::Transfer { number, reply } => {
                info!("the agent transfers the call");
                self.tool_replies.insert(ticket, reply);
                let uri = self.config.dial_uri_for(number.as_str());
                Input::Transfer { ticket, number: number.to_string(), uri }
            }
        };
        let effects = self.machine.handle(input, self.clock.now());
        drop(_guard);
        self.apply(effects);
    }

    /// A client tool's answer, to the thread waiting for it.
    fn reply_to_tool(&mut self, ticket: u64, result: Result<String, ToolError>) {
        if let Some(reply) = self.tool_replies.remove(&ticket) {
            let _ = reply.send(result);
        }
    }

    fn on_session(&mut self, msg: SessionMsg) {
        match msg {
            SessionMsg::Verdict { call_id, verdict } => self.session_input(&call_id, Input::Verdict(verdict)),
            SessionMsg::Ai { call_id, input } => self.session_input(&call_id, Input::Ai(input)),
            SessionMsg::Voicemail { call_id, left, detail } => self.session_input(&call_id, Input::VoicemailDone { left, detail }),
            SessionMsg::PlayedOut { call_id } => self.session_input(&call_id, Input::PlayedOut),
            SessionMsg::Done { call_id, stats, ai, early_media, recording } => {
                self.media_pending.remove(&call_id);
                let recording = match recording.map(|r| *r) {
                    Some(Ok(recording)) => Some(recording),
                    Some(Err(err)) => {
                        info_span!("call", call_id = %call_id).in_scope(|| error!(%err, "call not recorded"));
                        None
                    }
                    None => None,
                };
                // The counters go into the ended call's record.
                if stats.is_none() && ai.is_none() && early_media.is_none() && recording.is_none() {
                    if self.store.get(&call_id).is_some_and(|r| !r.is_active()) {
                        self.call_final(&call_id);
                    }
                    return;
                }
                if let Some(mut record) = self.store.get(&call_id).cloned().filter(|r| !r.is_active()) {
                    info_span!("call", call_id = %call_id).in_scope(|| {
                        debug!(?stats, ?ai, "media counters");
                    });
                    if stats.is_some() {
                        record.audio = stats;
                    }
                    if let Some(report) = early_media {
                        record.early_media = serde_json::to_value(report).ok();
                    }
                    if recording.is_some() {
                        record.recording = recording;
                    }
                    if let (Some(figures), Some(rec)) = (ai, record.ai.as_mut()) {
                        rec.first_caller_audio_ms = figures.first_caller_audio_ms;
                        rec.first_agent_audio_ms = figures.first_agent_audio_ms;
                        rec.dropped_chunks = figures.dropped_chunks;
                    }
                    if let Err(err) = self.put(&record) {
                        error!(%err, "media counters not saved");
                    }
                    self.call_final(&call_id);
                }
            }
        }
    }

    /// The active call as the machine has it now: the stored record plus the
    /// transcript lines not saved yet (they are saved at most every 10 s;
    /// every status is on disk already).
    fn live(&self, stored: CallRecord) -> CallRecord {
        match self.machine.active() {
            Some(active) if active.id == stored.id => active.clone(),
            _ => stored,
        }
    }

    /// Feeds a session's news to the machine, if its call is still the active one.
    fn session_input(&mut self, call_id: &str, input: Input) {
        if self.machine.active().is_some_and(|r| r.id == call_id) {
            let span = self.call_span();
            let _guard = span.enter();
            let effects = self.machine.handle(input, self.clock.now());
            drop(_guard);
            self.apply(effects);
        }
    }

    /// Places a call. Nothing is dialled that is not on disk first: a record that
    /// cannot be saved ends the call before the dial goes out.
    fn start_call(&mut self, number: &PhoneNumber, origin: &str, plan: Option<(String, u32)>) -> Result<CallRecord, DialRefusal> {
        if let Some(account) = self.registrations.not_registered() {
            info!(%origin, aor = %account.aor, state = account.state.as_str(), "dial refused: not registered");
            return Err(DialRefusal::NotRegistered {
                aor: account.aor.clone(),
                state: account.state.as_str(),
                reason: account.last_error.clone(),
            });
        }
        let now = self.clock.now();
        let id = uuid::Uuid::new_v4().to_string();
        let uri = self.config.dial_uri_for(number.as_str());
        let (record, effects) = self.machine.dial(id, number, uri, plan, now).map_err(|err| {
            info!(?err, %origin, "dial refused");
            DialRefusal::Machine(err)
        })?;
        let span = info_span!("call", call_id = %record.id);
        // The number is personal data: the record has it, the journal at INFO not.
        span.in_scope(|| {
            info!(%origin, "dialling");
            debug!(phone_number = %number, "dialling this number");
        });
        if let Err(err) = self.put(&record) {
            span.in_scope(|| error!(%err, "call record not saved; not dialling"));
            let not_sent = Input::CommandDone { tag: CommandTag::Dial, result: Err(CommandError::NotSent) };
            let effects = self.machine.handle(not_sent, now);
            self.apply(effects);
            return Err(DialRefusal::Storage { message: err.to_string(), disk_full: err.is_disk_full() });
        }
        self.apply(effects.into_iter().filter(|e| !matches!(e, Effect::Persist(_))).collect());
        Ok(self.store.get(&record.id).cloned().unwrap_or(record))
    }

    /// Someone calls the box: the machine decides. Like a dial, nothing is
    /// answered that is not on disk first.
    fn on_incoming(&mut self, event: &crate::baresip::protocol::Event) {
        let now = self.clock.now();
        let id = uuid::Uuid::new_v4().to_string();
        let mut effects = self.machine.incoming(id, event, now).into_iter().peekable();
        let ringing = match effects.peek() {
            Some(Effect::Persist(record)) if record.is_active() => Some(record.clone()),
            Some(_) => None,
            None => {
                debug!(sip_call_id = event.call_id.as_deref().unwrap_or(""), "CALL_INCOMING of a call already known; ignored");
                return;
            }
        };
        let Some(record) = ringing else {
            // Declined: the record (unless `off`) says why; the number is
            // personal data, kept in the record and out of the journal at INFO.
            if !effects.peek().is_some_and(|e| matches!(e, Effect::Persist(_))) {
                info!("incoming call declined: [incoming] mode = \"off\"");
            }
            self.apply(effects.collect());
            return;
        };
        let span = info_span!("call", call_id = %record.id);
        span.in_scope(|| {
            info!("incoming call: ringing");
            debug!(phone_number = %record.phone_number, "incoming call from this number");
        });
        if let Err(err) = self.put(&record) {
            span.in_scope(|| error!(%err, "call record not saved; declining the incoming call"));
            let not_sent = Input::CommandDone { tag: CommandTag::Accept, result: Err(CommandError::NotSent) };
            let effects = self.machine.handle(not_sent, now);
            self.apply(effects);
            return;
        }
        self.apply(effects.skip(1).collect());
    }

    /// A button press: run the button's plan, or hang up (a long press
    /// cancels the running plan run too).
    fn on_press(&mut self, press: Press) {
        let active = self.machine.active().map(|r| r.id.clone());
        let running = self.plans.running().map(|r| r.id.clone());
        match (press, active) {
            (Press::Short, None) => match (running, self.config.button.plan.clone()) {
                (Some(run), _) => {
                    info!(plan_run = %run, "button press ignored: a plan run waits for its next attempt (a long press cancels it)")
                }
                (None, Some(plan)) => {
                    if self.start_run(plan, "button").is_err() {
                        self.update_leds(Some(LedState::Error));
                    }
                }
                (None, None) => warn!("button press ignored: no [button] plan or phone_number configured"),
            },
            (Press::Short, Some(id)) if self.config.button.during_call == DuringCall::Hangup => self.hangup_by_button(&id),
            (Press::Short, Some(_)) => info!("button press during a call ignored ([button] during_call = \"ignore\")"),
            (Press::Long, active) => {
                if let Some(run) = running {
                    let _ = self.cancel_run(&run, "button");
                }
                match active {
                    Some(id) => self.hangup_by_button(&id),
                    None => info!("long press with no call: nothing to hang up"),
                }
            }
        }
    }

    /// Starts a run of `plan`; its first attempt goes out at the end of
    /// this turn of the loop ([`Self::advance_plans`]).
    fn start_run(&mut self, plan: Plan, origin: &str) -> Result<PlanRun, PlanRefusal> {
        let name = plan.name.clone();
        let id = uuid::Uuid::new_v4().to_string();
        let run = self.plans.start(plan, id, origin, self.clock.now()).map_err(|StartRefused::AlreadyRunning(running)| {
            info!(plan = %name, %origin, plan_run = %running, "plan run refused: another is running");
            PlanRefusal::AlreadyRunning(running)
        })?;
        info!(plan = %name, %origin, plan_run = %run.id, attempts = run.max_attempts, "plan run started");
        self.persist_run(&run);
        Ok(run)
    }

    /// Cancels run `id` and hangs up its call in flight.
    fn cancel_run(&mut self, id: &str, origin: &str) -> Result<PlanRun, CancelRefused> {
        let (run, in_flight) = self.plans.cancel(id, origin, self.clock.now())?;
        self.persist_run(&run);
        self.run_ended(&run);
        if let Some(call) = in_flight {
            if let Ok((_, effects)) = self.machine.hangup(&call, origin, self.clock.now()) {
                info_span!("call", call_id = %call).in_scope(|| info!(%origin, plan_run = %id, "hangup requested: plan run cancelled"));
                self.apply(effects);
            }
        }
        Ok(run)
    }

    /// After a restart: attempts in flight count as failed, pauses go on.
    fn resume_plans(&mut self) {
        let store = &self.store;
        for run in self.plans.resume(self.clock.now(), |id| store.get(id).cloned()) {
            info!(plan_run = %run.id, plan = %run.plan, state = run.state.as_str(), next_attempt_at = run.next_attempt_at.as_deref().unwrap_or(""), "plan run resumed after a restart");
            self.persist_run(&run);
            self.run_ended(&run);
        }
        if let Some(run) = self.plans.running() {
            info!(plan_run = %run.id, plan = %run.plan, next_attempt_at = run.next_attempt_at.as_deref().unwrap_or(""), "plan run goes on");
        }
    }

    /// When the pending attempt is due, if that is still to come.
    fn plan_deadline(&self) -> Option<tokio::time::Instant> {
        let now = self.clock.now();
        let at = self.plans.next_deadline_unix_ms().filter(|&at| at > now.unix_ms)?;
        let wait = Duration::from_millis(u64::try_from(at - now.unix_ms).unwrap_or(0));
        Some(tokio::time::Instant::now() + wait)
    }

    /// Places the pending attempt if it is due and the line is free: no
    /// call up, Baresip connected. Otherwise it waits; the loop comes back
    /// here after every input.
    fn advance_plans(&mut self) {
        let Some(attempt) = self.plans.due(self.clock.now()) else { return };
        // Not registered: the line is down; the attempt waits for it.
        if self.machine.active().is_some() || !self.machine.link_up() || self.registrations.not_registered().is_some() {
            return;
        }
        let Attempt { run_id, attempt: n, number } = attempt.clone();
        match self.start_call(&number, "plan", Some((run_id.clone(), n))) {
            Ok(record) => {
                info_span!("call", call_id = %record.id).in_scope(|| info!(plan_run = %run_id, attempt = n, "plan attempt placed"));
                if let Some(run) = self.plans.placed(&attempt, &record.id) {
                    self.persist_run(&run);
                }
            }
            // The line is not free after all: the attempt waits.
            Err(DialRefusal::Machine(_) | DialRefusal::PlanPending(_) | DialRefusal::NotRegistered { .. }) => {}
            Err(DialRefusal::Storage { message, .. }) => {
                warn!(plan_run = %run_id, attempt = n, %message, "plan attempt not placed");
                if let Some(run) = self.plans.not_placed(&attempt, format!("not placed: {message}"), self.clock.now()) {
                    self.persist_run(&run);
                    self.run_ended(&run);
                }
            }
        }
    }

    /// A call of a run ended: the run goes on or ends.
    fn plan_call_ended(&mut self, record: &CallRecord) {
        if record.plan_run.is_none() {
            return;
        }
        if let Some(run) = self.plans.call_ended(record, self.clock.now()) {
            if run.is_running() {
                let last = run.attempts.last().and_then(|a| a.result.as_deref()).unwrap_or("");
                info!(plan_run = %run.id, attempt = run.attempts.len(), result = last, next_attempt_at = run.next_attempt_at.as_deref().unwrap_or(""), "plan attempt failed; next one pending");
            }
            self.persist_run(&run);
            self.run_ended(&run);
        }
    }

    /// The run's journal line, synced (off this worker, as the calls').
    fn persist_run(&mut self, run: &PlanRun) {
        let Some(journal) = self.plan_journal.as_mut() else { return };
        if let Err(err) = self.liveness.on_disk(|| off_the_worker(|| journal.append(run))) {
            error!(%err, plan_run = %run.id, "plan run not saved");
        }
    }

    /// Says a run ended, if it did: the log line and the webhook.
    fn run_ended(&mut self, run: &PlanRun) {
        if run.is_running() {
            return;
        }
        info!(plan_run = %run.id, plan = %run.plan, state = run.state.as_str(), reason = run.reason.as_deref().unwrap_or(""), calls = run.calls.len(), "plan run ended");
        self.send_to_webhook(crate::webhook::Kind::PlanRun, run);
    }

    /// The call's record is final (ended, media counters in): the webhook.
    fn call_final(&mut self, call_id: &str) {
        if let Some(record) = self.store.get(call_id).cloned() {
            self.send_to_webhook(crate::webhook::Kind::Call, &record);
        }
    }

    /// Into the webhook's outbox, synced, if a webhook is configured.
    fn send_to_webhook(&mut self, kind: crate::webhook::Kind, record: &impl serde::Serialize) {
        let Some(webhook) = &self.webhook else { return };
        let now = self.clock.now().unix_ms;
        let put = crate::webhook::body(kind, record)
            .map_err(|e| e.to_string())
            .and_then(|body| self.liveness.on_disk(|| off_the_worker(|| webhook.put(kind, &body, now))).map_err(|e| e.to_string()));
        if let Err(err) = put {
            error!(%err, kind = kind.as_str(), "webhook delivery not kept");
        }
    }

    fn hangup_by_button(&mut self, id: &str) {
        if let Ok((_, effects)) = self.machine.hangup(id, "button", self.clock.now()) {
            info_span!("call", call_id = %id).in_scope(|| info!(origin = "button", "hangup requested"));
            self.apply(effects);
        }
    }

    /// Publishes the LED state for the current situation; `brief` is shown first.
    fn update_leds(&mut self, brief: Option<LedState>) {
        let Some(leds) = &self.leds else { return };
        let call = self.machine.active();
        let classifying = self.config.amd.enabled && call.is_some_and(|r| r.answer.is_none() && r.direction == CallDirection::Outbound);
        let registered = self.registrations.not_registered().is_none();
        let steady =
            LedState::steady_for(self.machine.link_up(), call.map(|r| r.status), classifying, self.plans.pending().is_some(), registered);
        let current = *leds.borrow();
        let now = tokio::time::Instant::now();
        let in_call = !matches!(steady, LedState::Idle | LedState::NoBaresip | LedState::PlanPending);
        let next = match brief {
            Some(brief) => LedView { shown: brief, steady, until: Some(now + BRIEF) },
            // A brief pattern plays out, unless a new call starts.
            None if current.until.is_some_and(|u| u > now) && !in_call => LedView { steady, ..current },
            None => LedView::steady(steady),
        };
        if next != current {
            leds.send_replace(next);
        }
    }

    fn on_report(&mut self, report: Report) {
        let now = self.clock.now();
        let input = match report {
            Report::LinkUp(resync) => {
                self.baresip_since = Some(rfc3339(now.unix_ms));
                self.notifier.status("Baresip connected");
                if let Some(tx) = self.on_first_link.take() {
                    let _ = tx.send(());
                }
                if let Some(listed) = &resync.registrations {
                    self.registrations.resync(listed, &rfc3339(now.unix_ms));
                }
                for account in self.registrations.accounts() {
                    info!(aor = %account.aor, state = account.state.as_str(), "SIP account");
                }
                if !resync.calls.is_empty() && self.machine.active().is_none() {
                    warn!(calls = resync.calls.len(), "Baresip has calls cap4 does not own; hanging up");
                }
                Input::LinkUp(resync)
            }
            Report::LinkDown { reason } => {
                self.baresip_since = None;
                self.notifier.status(&format!("Baresip not connected: {reason}"));
                warn!(%reason, "Baresip not connected");
                Input::LinkDown
            }
            Report::Event(event) if event.kind == crate::baresip::protocol::EventKind::CallIncoming => {
                self.on_incoming(&event);
                return;
            }
            Report::Event(event) if is_registration(&event) => {
                // Logged when it changes: a refresh every regint is no news.
                let changed = self.registrations.on_event(&event, &rfc3339(now.unix_ms));
                let account = self.registrations.accounts().find(|a| Some(&a.aor) == event.account.as_ref()).filter(|_| changed);
                if let Some(account) = account {
                    match &account.last_error {
                        Some(reason) if account.state == crate::baresip::registration::RegState::Failed => {
                            warn!(aor = %account.aor, %reason, "SIP registration failed");
                        }
                        _ => info!(aor = %account.aor, state = account.state.as_str(), "SIP registration"),
                    }
                }
                self.update_leds(None);
                return;
            }
            Report::Event(event) => {
                // Logged again here, inside the call's span, so that the protocol
                // detail of a call carries its CALL_ID in the journal.
                let span = self.call_span();
                span.in_scope(|| debug!(event = event.kind.as_str(), param = event.param.as_deref().unwrap_or(""), "Baresip event"));
                Input::Event(event)
            }
            Report::CommandDone { tag, result } => {
                if let Err(err) = &result {
                    self.call_span().in_scope(|| warn!(?tag, ?err, "Baresip command got no response"));
                }
                Input::CommandDone { tag, result }
            }
        };
        let span = self.call_span();
        let _guard = span.enter();
        let effects = self.machine.handle(input, now);
        drop(_guard);
        self.apply(effects);
    }

    fn on_api(&mut self, req: ApiRequest) {
        let now = self.clock.now();
        match req {
            ApiRequest::Dial { number, reply } => {
                let refusal = self.plans.pending().map(|run| DialRefusal::PlanPending(run.id.clone()));
                let _ = reply.send(match refusal {
                    Some(refusal) => Err(refusal),
                    None => self.start_call(&number, "api", None),
                });
            }
            ApiRequest::RunPlan { name, reply } => {
                let result = match self.config.plans.iter().find(|p| p.name == name).cloned() {
                    Some(plan) => self.start_run(plan, "api"),
                    None => Err(PlanRefusal::UnknownPlan { known: self.config.plans.iter().map(|p| p.name.clone()).collect() }),
                };
                let _ = reply.send(result);
            }
            ApiRequest::GetRun { id, reply } => {
                let _ = reply.send(self.plans.get(&id).cloned());
            }
            ApiRequest::ListRuns { limit, reply } => {
                let _ = reply.send(self.plans.list(limit));
            }
            ApiRequest::CancelRun { id, reply } => {
                let _ = reply.send(self.cancel_run(&id, "api"));
            }
            ApiRequest::Hangup { id, origin, reply } => match self.machine.hangup(&id, &origin, now) {
                Ok((_, effects)) => {
                    info_span!("call", call_id = %id).in_scope(|| info!(%origin, "hangup requested"));
                    self.waiting_hangups.push((id, reply));
                    self.apply(effects);
                }
                Err(HangupError::NotActive) => {
                    let refusal = match self.store.get(&id) {
                        Some(record) => HangupRefusal::AlreadyEnded(Box::new(record.clone())),
                        None => HangupRefusal::NotFound,
                    };
                    let _ = reply.send(Err(refusal));
                }
            },
            ApiRequest::Get { id, reply } => {
                let _ = reply.send(self.store.get(&id).cloned().map(|r| self.live(r)));
            }
            ApiRequest::Recording { id, reply } => {
                let lookup = match self.store.get(&id) {
                    None => RecordingLookup::NoCall,
                    Some(record) => record
                        .recording
                        .as_ref()
                        .zip(self.config.recording.folder())
                        .and_then(|(recording, dir)| crate::recording::path_of(dir, &recording.file))
                        .map_or(RecordingLookup::NoRecording, RecordingLookup::File),
                };
                let _ = reply.send(lookup);
            }
            ApiRequest::List { limit, before, reply } => {
                let list = self.store.list(limit, before.as_deref()).map(|v| v.into_iter().map(|r| self.live(r)).collect());
                let _ = reply.send(list);
            }
            ApiRequest::Health { reply } => {
                let _ = reply.send(Health {
                    baresip_connected: self.machine.link_up(),
                    baresip_since: self.baresip_since.clone(),
                    active_call: self.machine.active().map(|r| r.id.clone()),
                    calls_recorded: self.store.len(),
                    storage_error: self.store.unsynced().map(str::to_owned),
                    plan_run: self.plans.running().map(|r| r.id.clone()),
                    sip_accounts: self.registrations.accounts().cloned().collect(),
                    webhook: self.webhook.as_ref().map(|w| {
                        let outbox = w.outbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        (outbox.len(), outbox.dropped)
                    }),
                });
            }
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Persist(record) => {
                    let span = info_span!("call", call_id = %record.id);
                    let _guard = span.enter();
                    self.persist(&record);
                    self.announce(record);
                }
                Effect::StartMedia { call_id, answered, classify } => self.start_media(call_id, answered, classify),
                Effect::MediaAnswered { call_id } => {
                    if let Some(session) = self.session.as_mut().filter(|s| s.call_id == call_id) {
                        session.answered();
                    }
                }
                Effect::StopMedia { call_id } => {
                    if let Some(mut session) = self.session.take_if(|s| s.call_id == call_id) {
                        session.stop();
                    }
                }
                Effect::Send { command, tag } => {
                    if self.baresip.send(Request { command, tag }).is_err() {
                        error!("Baresip client task is gone");
                    }
                }
                Effect::StartAi { call_id } => match self.session.as_mut().filter(|s| s.call_id == call_id) {
                    Some(session) => session.start_ai(),
                    None => {
                        // Never leave a person in silence: the call ends, saying why.
                        error!(%call_id, "AI requested without a media session");
                        let reason = "no media session (no audio and no agent configured)".to_string();
                        let effects = self.machine.handle(Input::Ai(AiInput::StartFailed { reason }), self.clock.now());
                        self.apply(effects);
                    }
                },
                Effect::KeysDone { ticket, result } => {
                    match &result {
                        Ok(keys) => info!(keys = keys.chars().filter(|c| crate::call::dtmf::is_key(*c)).count(), "the agent's keys sent"),
                        Err(refused) => warn!(%refused, "the agent's keys not sent"),
                    }
                    let answer = result.map(|keys| format!("sent {keys}")).map_err(|refused| ToolError(refused.to_string()));
                    self.reply_to_tool(ticket, answer);
                }
                Effect::TransferDone { ticket, result } => {
                    match &result {
                        Ok(done) => info!(%done, "call transferred"),
                        Err(refused) => warn!(%refused, "call not transferred"),
                    }
                    self.reply_to_tool(ticket, result.map_err(|refused| ToolError(refused.to_string())));
                }
                Effect::AwaitPlayout { call_id } => {
                    let waiting = self.session.as_mut().filter(|s| s.call_id == call_id).is_some_and(|s| s.await_playout());
                    if !waiting {
                        // No session to play anything: nothing to wait for.
                        let effects = self.machine.handle(Input::PlayedOut, self.clock.now());
                        self.apply(effects);
                    }
                }
                Effect::AgentText { call_id, text } => match self.session.as_mut().filter(|s| s.call_id == call_id) {
                    Some(session) => session.send_text(text),
                    None => warn!(%call_id, "text for the agent without a media session"),
                },
                Effect::DropVoicemail { call_id } => match self.session.as_mut().filter(|s| s.call_id == call_id) {
                    Some(session) => session.drop_voicemail(),
                    None => error!(%call_id, "voicemail drop requested without a media session"),
                },
            }
        }
    }

    /// The journal's append, off this worker: `fdatasync` on a slow SD card
    /// can take seconds, and this task must wait for it (a record is on disk
    /// before anyone is told), but the Baresip link, the API and the media
    /// sessions scheduled on the same worker must not (see [`off_the_worker`]).
    fn put(&mut self, record: &CallRecord) -> Result<(), crate::store::StoreError> {
        let store = &mut self.store;
        self.liveness.on_disk(|| off_the_worker(|| store.put(record)))
    }

    /// Writes the record to the journal (synced). Nothing else: what the new
    /// status means comes in the machine's next effects and [`Self::announce`].
    fn persist(&mut self, record: &CallRecord) {
        if let Err(err) = self.put(record) {
            // Keep calling: losing history is bad, dropping a live call is worse.
            error!(%err, "call record not saved");
        }
    }

    /// Tells the world about a saved record: the log line, the LEDs' brief
    /// pattern for how it ended, and hangups waiting for the end.
    fn announce(&mut self, record: CallRecord) {
        if record.status != Status::Ended {
            info!(status = record.status.as_str(), sip_call_id = record.sip_call_id.as_deref().unwrap_or(""), "call status");
            return;
        }
        info!(
            status = record.status.as_str(),
            outcome = record.outcome.map_or("", |o| o.as_str()),
            reason = record.reason.as_deref().unwrap_or(""),
            sip_call_id = record.sip_call_id.as_deref().unwrap_or(""),
            "call ended"
        );
        if let Some(brief) = LedState::brief_after(record.outcome, record.direction) {
            self.update_leds(Some(brief));
        }
        self.plan_call_ended(&record);
        if !self.media_pending.contains(&record.id) {
            self.call_final(&record.id);
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting_hangups).into_iter().partition(|(id, _)| *id == record.id);
        self.waiting_hangups = waiting;
        for (_, reply) in done {
            let _ = reply.send(Ok(record.clone()));
        }
    }

    /// Starts the call's media session (the machine says when: one per call).
    fn start_media(&mut self, call_id: String, answered: bool, classify: bool) {
        let Some(record) = self.machine.active().filter(|r| r.id == call_id) else { return };
        let audio = self.config.audio.clone();
        let params = session::SessionParams {
            call_id,
            answered,
            phone_number: record.phone_number.clone(),
            open_engine: Arc::new(move || crate::audio::AudioEngine::start(&audio)),
            amd: classify.then(|| self.config.amd.clone()),
            provider: self.provider.clone(),
            voicemail: self.config.voicemail_message.clone().filter(|_| classify).map(|m| (m, self.config.voicemail.clone())),
            recording: self.config.recording.enabled.then(|| self.config.recording.clone()),
        };
        self.media_pending.insert(params.call_id.clone());
        if let Some(mut previous) = self.session.replace(session::start(params, self.session_tx.clone())) {
            // Never two at once: the devices are one.
            warn!(call_id = %previous.call_id, "a media session was still running; stopped");
            previous.stop();
        }
    }

    fn call_span(&self) -> Span {
        match self.machine.active() {
            Some(record) => info_span!("call", call_id = %record.id),
            None => Span::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::off_the_worker;
    use std::time::Duration;

    /// One worker: a disk write that blocks it would stop every other task
    /// on it; off the worker, another task runs meanwhile (and here is what
    /// lets the blocked one go on).
    #[test]
    fn a_blocking_write_does_not_hold_up_the_other_tasks_of_its_worker() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (ticks_tx, ticks_rx) = std::sync::mpsc::channel::<()>();
        runtime.block_on(async move {
            let writer = tokio::spawn(async move {
                off_the_worker(|| {
                    // Blocks until the other task has run five times.
                    (0..5).all(|_| ticks_rx.recv_timeout(Duration::from_secs(5)).is_ok())
                })
            });
            tokio::spawn(async move {
                while ticks_tx.send(()).is_ok() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            assert!(writer.await.unwrap(), "the other task ran while the write blocked");
        });
        // Outside a runtime it simply runs.
        assert_eq!(off_the_worker(|| 7), 7);
    }
}
