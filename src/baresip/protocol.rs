//! The JSON messages carried over `ctrl_tcp`, for Baresip 1.0.0 and newer.
//!
//! Owns the mapping between netstring payloads and typed values: commands we send
//! (always string members, since a non-string member crashes Baresip 1.0.0),
//! responses and events we receive, and the parsing of the human-oriented text that
//! `listcalls`, `callstat` and `CALL_CLOSED` carry. Nothing here does I/O.
//!
//! Version differences handled here (see `tests/fixtures/baresip/README.md`):
//! * `dial` answers with `call id: <id>` in `data` since 1.1.0 (empty in 1.0.0);
//! * `class` names changed in 3.15.0 (`other` became `call`), so we key on `type`;
//! * `CALL_OUTGOING` (2.0.0) and `CALL_ANSWERED` (1.1.0) are new event types;
//! * `CALL_CLOSED` after a local hangup reads `Rejected by user` since 3.18.0, and
//!   may carry `,<Reason header>` since 3.24.0;
//! * SIP `MESSAGE`s arrive as a third shape (`"message": true`) since 1.1.0.

use serde_json::{Map, Value};
use std::fmt;

/// A command for Baresip. Every member is a string by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: CommandName,
    pub params: Option<String>,
}

/// The commands CAP4 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandName {
    Dial,
    /// Answers an incoming call. 1.0.0 ignores `params` and answers the
    /// newest call; newer versions answer the call whose id `params` names.
    Accept,
    Hangup,
    ListCalls,
    CallStat,
    /// Each account's registration (at a resync).
    RegInfo,
    /// Sends `params`' keys as DTMF on the current call (menu's `sndcode`,
    /// 1.0.0 and 4.x alike; with no call it does nothing and says ok).
    SendCode,
    /// Blind transfer of the current call to `params` (a SIP URI): REFER.
    /// 4.x puts the call on hold first (and resumes it if the REFER fails).
    Transfer,
}

impl CommandName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dial => "dial",
            Self::Accept => "accept",
            Self::Hangup => "hangup",
            Self::ListCalls => "listcalls",
            Self::CallStat => "callstat",
            Self::RegInfo => "reginfo",
            Self::SendCode => "sndcode",
            Self::Transfer => "transfer",
        }
    }
}

impl Command {
    /// The JSON payload, with `token` as the correlation string.
    pub fn to_json(&self, token: &str) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("command".into(), Value::String(self.name.as_str().into()));
        if let Some(params) = &self.params {
            obj.insert("params".into(), Value::String(params.clone()));
        }
        obj.insert("token".into(), Value::String(token.into()));
        Value::Object(obj).to_string().into_bytes()
    }
}

/// A reply to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub ok: bool,
    pub data: String,
    pub token: Option<String>,
}

/// Direction of a call, as Baresip reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outgoing,
    Incoming,
}

/// Event types CAP4 acts on; everything else is kept by name for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    CallOutgoing,
    CallLocalSdp,
    CallRinging,
    CallProgress,
    CallRemoteSdp,
    CallRtpEstab,
    CallAnswered,
    CallEstablished,
    CallIncoming,
    CallClosed,
    /// The caller pressed a key (`param`: the key), RFC 4733 or SIP INFO.
    CallDtmfStart,
    /// The key was let go.
    CallDtmfEnd,
    /// An account's registration (`accountaor`): a REGISTER is out, it
    /// succeeded (`param` `200 OK`), failed (`param` the reason), or the
    /// account is unregistering (at shutdown).
    Registering,
    RegisterOk,
    RegisterFail,
    Unregistering,
    /// Our REFER failed (`param`: `603 Decline`). 1.0.0 then drops the call
    /// without a `CALL_CLOSED`; 4.x keeps it (and resumes it).
    TransferFailed,
    Shutdown,
    Exit,
    Other(String),
}

impl EventKind {
    fn parse(name: &str) -> Self {
        match name {
            "CALL_OUTGOING" => Self::CallOutgoing,
            "CALL_LOCAL_SDP" => Self::CallLocalSdp,
            "CALL_RINGING" => Self::CallRinging,
            "CALL_PROGRESS" => Self::CallProgress,
            "CALL_REMOTE_SDP" => Self::CallRemoteSdp,
            "CALL_RTPESTAB" => Self::CallRtpEstab,
            "CALL_ANSWERED" => Self::CallAnswered,
            "CALL_ESTABLISHED" => Self::CallEstablished,
            "CALL_INCOMING" => Self::CallIncoming,
            "CALL_CLOSED" => Self::CallClosed,
            "CALL_DTMF_START" => Self::CallDtmfStart,
            "CALL_DTMF_END" => Self::CallDtmfEnd,
            "TRANSFER_FAILED" => Self::TransferFailed,
            "REGISTERING" => Self::Registering,
            "REGISTER_OK" => Self::RegisterOk,
            "REGISTER_FAIL" => Self::RegisterFail,
            "UNREGISTERING" => Self::Unregistering,
            "SHUTDOWN" => Self::Shutdown,
            "EXIT" => Self::Exit,
            other => Self::Other(other.to_string()),
        }
    }

    /// The wire name, for logs and call timelines.
    pub fn as_str(&self) -> &str {
        match self {
            Self::CallOutgoing => "CALL_OUTGOING",
            Self::CallLocalSdp => "CALL_LOCAL_SDP",
            Self::CallRinging => "CALL_RINGING",
            Self::CallProgress => "CALL_PROGRESS",
            Self::CallRemoteSdp => "CALL_REMOTE_SDP",
            Self::CallRtpEstab => "CALL_RTPESTAB",
            Self::CallAnswered => "CALL_ANSWERED",
            Self::CallEstablished => "CALL_ESTABLISHED",
            Self::CallIncoming => "CALL_INCOMING",
            Self::CallClosed => "CALL_CLOSED",
            Self::CallDtmfStart => "CALL_DTMF_START",
            Self::CallDtmfEnd => "CALL_DTMF_END",
            Self::TransferFailed => "TRANSFER_FAILED",
            Self::Registering => "REGISTERING",
            Self::RegisterOk => "REGISTER_OK",
            Self::RegisterFail => "REGISTER_FAIL",
            Self::Unregistering => "UNREGISTERING",
            Self::Shutdown => "SHUTDOWN",
            Self::Exit => "EXIT",
            Self::Other(name) => name,
        }
    }
}

/// An unsolicited event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub direction: Option<Direction>,
    pub peer_uri: Option<String>,
    /// The SIP Call-ID; missing from the first `CALL_LOCAL_SDP` of a dial.
    pub call_id: Option<String>,
    pub param: Option<String>,
    /// The account (`accountaor`) the event is about.
    pub account: Option<String>,
}

/// One decoded message from Baresip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Response(Response),
    Event(Event),
    /// A SIP MESSAGE forwarded by newer Baresip; CAP4 does not use them.
    SipMessage,
}

/// Why a payload is not a message we understand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    NotJson(String),
    NotAnObject,
    /// An object with none of the `response`/`event`/`message` markers.
    UnknownShape,
    /// A marker is present but a required member is missing or of the wrong type.
    BadMember(&'static str),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson(err) => write!(f, "payload is not JSON: {err}"),
            Self::NotAnObject => write!(f, "payload is not a JSON object"),
            Self::UnknownShape => write!(f, "object is neither a response, an event nor a message"),
            Self::BadMember(name) => write!(f, "member `{name}` is missing or has the wrong type"),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes one netstring payload.
pub fn decode(payload: &[u8]) -> Result<Inbound, ProtocolError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| ProtocolError::NotJson(e.to_string()))?;
    let Value::Object(obj) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    // The markers are JSON `true` on the wire; upstream docs once showed "true".
    let marked = |key: &str| matches!(obj.get(key), Some(Value::Bool(true)) | Some(Value::String(_)));
    if marked("response") {
        let ok = obj.get("ok").and_then(Value::as_bool).ok_or(ProtocolError::BadMember("ok"))?;
        Ok(Inbound::Response(Response { ok, data: string_member(&obj, "data").unwrap_or_default(), token: string_member(&obj, "token") }))
    } else if marked("event") {
        let kind = obj.get("type").and_then(Value::as_str).ok_or(ProtocolError::BadMember("type"))?;
        let direction = match obj.get("direction").and_then(Value::as_str) {
            Some("outgoing") => Some(Direction::Outgoing),
            Some("incoming") => Some(Direction::Incoming),
            _ => None,
        };
        Ok(Inbound::Event(Event {
            kind: EventKind::parse(kind),
            direction,
            peer_uri: string_member(&obj, "peeruri"),
            call_id: string_member(&obj, "id").filter(|id| !id.is_empty()),
            param: string_member(&obj, "param"),
            account: string_member(&obj, "accountaor"),
        }))
    } else if marked("message") {
        Ok(Inbound::SipMessage)
    } else {
        Err(ProtocolError::UnknownShape)
    }
}

fn string_member(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// The call id newer Baresip (1.1.0+) puts in a `dial` response's `data`
/// (`call id: <id>`, or `call uri: ...\ncall id: <id>\n` on master).
pub fn call_id_from_dial_data(data: &str) -> Option<String> {
    data.lines().filter_map(|line| line.trim().strip_prefix("call id:")).map(|id| id.trim().to_string()).find(|id| !id.is_empty())
}

/// One line of `listcalls` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCall {
    /// `OUTGOING`, `RINGING`, `EARLY`, `ESTABLISHED`, `INCOMING`, `TERMINATED`.
    pub state: String,
    pub peer_uri: String,
}

/// Parses `listcalls` output (`--- Active calls (N) ---` then `> [line 1]  0:00:01  STATE  URI`).
/// Returns `None` if the text does not look like a call list at all.
/// More calls than a box could hold (it places one at a time): a `listcalls`
/// count above this is refused as unreadable.
pub const MAX_LISTED_CALLS: usize = 64;

pub fn parse_listcalls(data: &str) -> Option<Vec<ListedCall>> {
    let header = data.lines().find(|l| l.contains("Active calls ("))?;
    let start = header.find('(')? + 1;
    let end = header[start..].find(')')? + start;
    let count: usize = header[start..end].trim().parse().ok()?;
    if count > MAX_LISTED_CALLS {
        // Not a count Baresip would send: unreadable, not an allocation.
        return None;
    }
    let calls: Vec<ListedCall> = data
        .lines()
        .filter_map(|line| {
            // "> [line 1] ..." for the current call, " [line 2] ..." for the others.
            let (_, rest) = line.split_once("[line ")?;
            let (_, rest) = rest.split_once(']')?;
            let mut words = rest.split_whitespace();
            let _duration = words.next()?;
            let state = words.next()?.to_string();
            let peer_uri = words.next().unwrap_or_default().to_string();
            Some(ListedCall { state, peer_uri })
        })
        .collect();
    // Trust the header count: a list line we failed to parse still counts as a call.
    if calls.len() == count { Some(calls) } else { Some(vec![ListedCall { state: "UNKNOWN".into(), peer_uri: String::new() }; count]) }
}

/// The call id in `callstat` output (`af=AF_INET id=<call-id>`), if any call exists.
pub fn parse_callstat_id(data: &str) -> Option<String> {
    data.split_whitespace().find_map(|word| word.strip_prefix("id=")).map(str::to_owned).filter(|id| !id.is_empty())
}

/// What a `CALL_CLOSED` reason text says about how the call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// A final SIP response: `"486 Busy Here"`.
    SipStatus(u16),
    /// The remote hung up (BYE): `Connection reset by peer`.
    RemoteHangup,
    /// We hung up: `Connection reset by user` (1.0.0) / `Rejected by user` (3.18+, 4.10).
    LocalHangup,
    /// No answer at all to the INVITE (SIP timer B): `Connection timed out`.
    TimedOut,
    /// Transport refused: `Connection refused`, `Network is unreachable`, ...
    Refused,
    /// Baresip's own `call_local_timeout` expired: `Local timeout`.
    LocalTimeout,
    /// Our REFER succeeded (the NOTIFY said 200): `Call transfered` (sic,
    /// 1.0.0 and 4.10), Baresip then hangs up.
    Transferred,
    /// Anything else (media errors such as `end of file`, unknown texts).
    Other,
}

/// Classifies a `CALL_CLOSED` `param`. Matches a leading 3-digit code first, then
/// glibc's error texts (a different C library may word them differently, so the
/// fallback is `Other`, never a guess).
pub fn classify_close(param: &str) -> CloseCause {
    // 3.24+: "<reason>,<Reason header value>"; the header part is informative only.
    let head = param.split(',').next().unwrap_or(param).trim();
    // 4.x: the errno after the text, "Connection reset by peer [104]".
    let head = match head.rsplit_once(" [") {
        Some((text, errno)) if errno.strip_suffix(']').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) => text,
        _ => head,
    };
    let digits: String = head.chars().take_while(char::is_ascii_digit).collect();
    if digits.len() == 3 && head[3..].chars().next().is_none_or(|c| c == ' ') {
        if let Ok(code) = digits.parse::<u16>() {
            if (300..700).contains(&code) {
                return CloseCause::SipStatus(code);
            }
        }
    }
    match head.to_ascii_lowercase().as_str() {
        "connection reset by peer" => CloseCause::RemoteHangup,
        "connection reset by user" | "rejected by user" => CloseCause::LocalHangup,
        "connection timed out" => CloseCause::TimedOut,
        "connection refused" | "network is unreachable" | "no route to host" | "host is unreachable" => CloseCause::Refused,
        "local timeout" => CloseCause::LocalTimeout,
        "call transfered" | "call transferred" => CloseCause::Transferred,
        _ => CloseCause::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_all_strings() {
        let cmd = Command { name: CommandName::Dial, params: Some("sip:+7912@h".into()) };
        let v: Value = serde_json::from_slice(&cmd.to_json("cap4-1")).unwrap();
        assert_eq!(v["command"], "dial");
        assert_eq!(v["params"], "sip:+7912@h");
        assert_eq!(v["token"], "cap4-1");
        let hangup = Command { name: CommandName::Hangup, params: None };
        let v: Value = serde_json::from_slice(&hangup.to_json("t")).unwrap();
        assert!(v.get("params").is_none());
    }

    #[test]
    fn decodes_the_three_shapes() {
        let r = decode(br#"{"response":true,"ok":false,"data":"command not found (x)\n","token":"a"}"#).unwrap();
        assert_eq!(r, Inbound::Response(Response { ok: false, data: "command not found (x)\n".into(), token: Some("a".into()) }));
        let e = decode(br#"{"event":true,"type":"CALL_CLOSED","class":"call","direction":"outgoing","peeruri":"sip:a@b","id":"42","param":"486 Busy Here"}"#).unwrap();
        let Inbound::Event(e) = e else { panic!("not an event") };
        assert_eq!(e.kind, EventKind::CallClosed);
        assert_eq!(e.call_id.as_deref(), Some("42"));
        assert_eq!(e.direction, Some(Direction::Outgoing));
        assert_eq!(decode(br#"{"message":true,"type":"MESSAGE"}"#).unwrap(), Inbound::SipMessage);
    }

    #[test]
    fn rejects_what_it_does_not_understand() {
        assert!(matches!(decode(b"not json"), Err(ProtocolError::NotJson(_))));
        assert_eq!(decode(b"[1,2]"), Err(ProtocolError::NotAnObject));
        assert_eq!(decode(br#"{"foo":1}"#), Err(ProtocolError::UnknownShape));
        assert_eq!(decode(br#"{"response":true,"ok":"yes"}"#), Err(ProtocolError::BadMember("ok")));
        assert_eq!(decode(br#"{"event":true,"type":7}"#), Err(ProtocolError::BadMember("type")));
    }

    #[test]
    fn dial_data_call_id_in_newer_versions() {
        assert_eq!(call_id_from_dial_data(""), None);
        assert_eq!(call_id_from_dial_data("call id: 5b3f0e2a"), Some("5b3f0e2a".into()));
        assert_eq!(call_id_from_dial_data("call uri: sip:a@b\ncall id: abc-1\n"), Some("abc-1".into()));
    }

    #[test]
    fn a_listcalls_count_no_baresip_sends_is_unreadable_not_a_panic() {
        for count in ["18446744073709551615", "100000000", "65"] {
            assert_eq!(parse_listcalls(&format!("\n--- Active calls ({count}) ---\n\n")), None, "{count}");
        }
        assert_eq!(parse_listcalls("\n--- Active calls (99999999999999999999999) ---\n"), None, "does not even parse");
        assert_eq!(parse_listcalls("--- Active calls (2) ---\n").map(|c| c.len()), Some(2));
    }

    #[test]
    fn parses_listcalls_and_callstat() {
        let one = "\n--- Active calls (1) ---\n> [line 1]  0:00:01  ESTABLISHED             sip:test@127.0.0.1:5070\n\n";
        assert_eq!(
            parse_listcalls(one),
            Some(vec![ListedCall { state: "ESTABLISHED".into(), peer_uri: "sip:test@127.0.0.1:5070".into() }])
        );
        assert_eq!(parse_listcalls("\n--- Active calls (0) ---\n\n"), Some(vec![]));
        let two = "\n--- Active calls (2) ---\n  [line 1]  0:00:09  ESTABLISHED  sip:a@h\n> [line 2]  0:00:01  INCOMING  sip:b@h\n";
        let calls = parse_listcalls(two).unwrap();
        assert_eq!(calls.iter().map(|c| c.state.as_str()).collect::<Vec<_>>(), ["ESTABLISHED", "INCOMING"]);
        assert_eq!(parse_listcalls("garbage"), None);
        let stat = "\n===== Call debug (ESTABLISHED) =====\n local_uri:  <sip:box@127.0.0.1:5062>\n af=AF_INET id=6514222d62b67bf1\n";
        assert_eq!(parse_callstat_id(stat), Some("6514222d62b67bf1".into()));
        assert_eq!(parse_callstat_id("\n(no active calls)\n"), None);
    }

    #[test]
    fn classifies_close_reasons_of_old_and_new_versions() {
        assert_eq!(classify_close("486 Busy Here"), CloseCause::SipStatus(486));
        assert_eq!(classify_close("404 Not Found"), CloseCause::SipStatus(404));
        assert_eq!(classify_close("Connection reset by peer"), CloseCause::RemoteHangup);
        assert_eq!(classify_close("Connection reset by peer,Q.850;cause=16;text=\"Normal call clearing\""), CloseCause::RemoteHangup);
        assert_eq!(classify_close("Connection reset by user"), CloseCause::LocalHangup);
        assert_eq!(classify_close("Rejected by user"), CloseCause::LocalHangup);
        assert_eq!(classify_close("Connection timed out"), CloseCause::TimedOut);
        // 4.x appends the errno.
        assert_eq!(classify_close("Connection reset by peer [104]"), CloseCause::RemoteHangup);
        assert_eq!(classify_close("Connection timed out [110]"), CloseCause::TimedOut);
        assert_eq!(classify_close("Connection reset by peer [x]"), CloseCause::Other);
        assert_eq!(classify_close("Connection refused"), CloseCause::Refused);
        assert_eq!(classify_close("Local timeout"), CloseCause::LocalTimeout);
        assert_eq!(classify_close("Call transfered"), CloseCause::Transferred);
        assert_eq!(classify_close("end of file"), CloseCause::Other);
        assert_eq!(classify_close("4861 odd"), CloseCause::Other);
        assert_eq!(classify_close(""), CloseCause::Other);
    }
}
