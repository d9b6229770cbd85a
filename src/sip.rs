//! `[sip]`: the SIP provider's settings a technician sets in `cap4.toml`
//! (the account, its registrar's proxy, the transport, STUN/ICE behind NAT,
//! the registration interval), and what `cap4 baresip-config` makes of
//! them: Baresip's `accounts` line and the modules its `config` needs.
//!
//! Promises: no value can smuggle a second parameter or line into Baresip's
//! files (`;`, `<`, `>`, `"`, `,`, spaces and control characters are refused,
//! in the password too: [`password_fits`]);
//! the password (`$CAP4_SIP_PASSWORD` or the `sip-password` systemd
//! credential) goes only into the accounts file `baresip-config` writes
//! with mode 0600, never into a log line.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::environment::{Environment, Secret};
use crate::section::SectionError;

/// The SIP password's environment variable and systemd credential.
pub const PASSWORD_ENV: &str = "CAP4_SIP_PASSWORD";
pub const PASSWORD_CREDENTIAL: &str = "sip-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// NAT traversal for the media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nat {
    #[default]
    None,
    Stun,
    Ice,
}

/// `[sip]` as written in the TOML. Without `account`, Baresip's own
/// accounts file is used as it is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// The address of record: `sip:4930123456@sip.provider.net`.
    pub account: Option<String>,
    /// The user name for the registrar's challenge, if not the AOR's user.
    pub auth_user: Option<String>,
    /// `sip:proxy.provider.net:5060`: every request goes through it.
    pub outbound_proxy: Option<String>,
    pub transport: Transport,
    /// `stun` or `ice` need `stun_server`.
    pub nat: Nat,
    /// `stun:stun.provider.net:3478`.
    pub stun_server: Option<String>,
    /// Seconds between registrations; 0: never register (a trunk by IP).
    pub register_interval_s: u32,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            account: None,
            auth_user: None,
            outbound_proxy: None,
            transport: Transport::Udp,
            nat: Nat::None,
            stun_server: None,
            register_interval_s: 3600,
        }
    }
}

/// The first character of `value` Baresip's account line cannot carry: it
/// would end the value (`;`, `,`, whitespace), the URI (`<`, `>`), a quoted
/// parameter (`"`) or the line (control characters).
fn unfit_char(value: &str) -> Option<char> {
    value.chars().find(|c| c.is_control() || c.is_whitespace() || matches!(c, ';' | '<' | '>' | '"' | ','))
}

/// A value that cannot go into Baresip's account line as it is.
fn plain(key: &'static str, value: &str) -> Result<(), SectionError> {
    match unfit_char(value) {
        Some(c) => Err(SectionError::new("sip", key, format!("`{value}` has {c:?}, which cannot go into Baresip's account line"))),
        None if value.is_empty() => Err(SectionError::new("sip", key, "must not be empty")),
        None => Ok(()),
    }
}

impl SipConfig {
    pub fn validate(&self) -> Result<(), SectionError> {
        if let Some(account) = &self.account {
            plain("account", account)?;
            let user_host = account.strip_prefix("sip:").or_else(|| account.strip_prefix("sips:"));
            if !user_host.is_some_and(|rest| rest.split_once('@').is_some_and(|(u, h)| !u.is_empty() && !h.is_empty())) {
                return Err(SectionError::new("sip", "account", format!("`{account}`: expected sip:USER@HOST")));
            }
        }
        if let Some(user) = &self.auth_user {
            plain("auth_user", user)?;
        }
        if let Some(proxy) = &self.outbound_proxy {
            plain("outbound_proxy", proxy)?;
            if !(proxy.starts_with("sip:") || proxy.starts_with("sips:")) {
                return Err(SectionError::new("sip", "outbound_proxy", format!("`{proxy}`: expected sip:HOST[:PORT]")));
            }
        }
        if let Some(stun) = &self.stun_server {
            plain("stun_server", stun)?;
            if !(stun.starts_with("stun:") || stun.starts_with("stuns:")) {
                return Err(SectionError::new("sip", "stun_server", format!("`{stun}`: expected stun:HOST[:PORT]")));
            }
        }
        if self.nat != Nat::None && self.stun_server.is_none() {
            return Err(SectionError::new("sip", "nat", "stun and ice need stun_server"));
        }
        if self.register_interval_s != 0 && !(60..=86_400).contains(&self.register_interval_s) {
            return Err(SectionError::new("sip", "register_interval_s", "must be 0 (never) or 60 to 86400"));
        }
        Ok(())
    }

    /// Baresip's `accounts` line for `[sip] account` (`None` without one).
    pub fn account_line(&self, password: Option<&Secret>) -> Option<String> {
        let account = self.account.as_ref()?;
        let mut line = format!("<{account};transport={}>", self.transport.as_str());
        if let Some(user) = &self.auth_user {
            line.push_str(&format!(";auth_user={user}"));
        }
        if let Some(password) = password {
            line.push_str(&format!(";auth_pass={}", password.expose()));
        }
        if let Some(proxy) = &self.outbound_proxy {
            line.push_str(&format!(";outbound=\"{proxy};lr\""));
        }
        match self.nat {
            Nat::None => {}
            Nat::Stun => line.push_str(";medianat=stun"),
            Nat::Ice => line.push_str(";medianat=ice"),
        }
        if let Some(stun) = &self.stun_server {
            line.push_str(&format!(";stunserver={stun}"));
        }
        // A REFER from the far end would make Baresip dial wherever it says.
        line.push_str(&format!(";regint={};call_transfer=no;audio_codecs=PCMU,PCMA", self.register_interval_s));
        Some(line)
    }

    /// The `module` lines Baresip's config needs for `nat`.
    pub fn modules(&self) -> &'static [&'static str] {
        match self.nat {
            Nat::None => &[],
            Nat::Stun => &["stun.so"],
            Nat::Ice => &["stun.so", "ice.so"],
        }
    }
}

/// The SIP password, if one is set.
pub fn password(env: &dyn Environment) -> Option<Secret> {
    Secret::from_environment(env, PASSWORD_ENV, PASSWORD_CREDENTIAL)
}

/// Whether Baresip's account line can carry `password` (its `auth_pass`
/// ends at `;` or a space; a line break would start another account).
pub fn password_fits(password: &Secret) -> bool {
    unfit_char(password.expose()).is_none()
}

/// Why `baresip-config` wrote nothing.
#[derive(Debug)]
pub enum WriteError {
    Read { path: std::path::PathBuf, source: std::io::Error },
    Write { path: std::path::PathBuf, source: std::io::Error },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Write { path, source } => write!(f, "cannot write {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {}

/// Writes Baresip's `config` (the base with the modules `[sip]` needs) and
/// `accounts` (0600; `[sip] account` with the password, or the base
/// accounts file) into `out`, from the base folder `base`.
pub fn write_baresip_config(sip: &SipConfig, password: Option<&Secret>, base: &Path, out: &Path) -> Result<(), WriteError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let read = |name: &str| {
        let path = base.join(name);
        std::fs::read_to_string(&path).map_err(|source| WriteError::Read { path, source })
    };
    let mut config = read("config")?;
    for module in sip.modules() {
        let present = config.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["module", module]);
        if !present {
            config.push_str(&format!("\n# [sip] nat (cap4 baresip-config)\nmodule {module}\n"));
        }
    }
    let accounts = match sip.account_line(password) {
        Some(line) => format!("# Written by `cap4 baresip-config` from [sip]; edit cap4.toml, not this file.\n{line}\n"),
        None => read("accounts")?,
    };
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        let tmp = out.join(format!(".{name}.tmp"));
        let result = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        result.map_err(|source| WriteError::Write { path, source })
    };
    write("config", &config)?;
    write("accounts", &accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(text: &str) -> SipConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_provider_account_becomes_one_baresip_line() {
        let cfg = sip(r#"
            account = "sip:4930123@sip.example.net"
            auth_user = "u4930123"
            outbound_proxy = "sip:proxy.example.net:5060"
            transport = "tcp"
            nat = "ice"
            stun_server = "stun:stun.example.net:3478"
            register_interval_s = 600
        "#);
        cfg.validate().unwrap();
        let line = cfg.account_line(Some(&Secret::new("pw"))).unwrap();
        assert_eq!(
            line,
            "<sip:4930123@sip.example.net;transport=tcp>;auth_user=u4930123;auth_pass=pw;outbound=\"sip:proxy.example.net:5060;lr\";\
             medianat=ice;stunserver=stun:stun.example.net:3478;regint=600;call_transfer=no;audio_codecs=PCMU,PCMA"
        );
        assert_eq!(cfg.modules(), ["stun.so", "ice.so"]);
        assert_eq!(SipConfig::default().account_line(None), None);
        assert!(password_fits(&Secret::new("Ab3$%&!x")));
        for bad in ["a;regint=0", "a b", "a\n<sip:x@y>", "a\"b"] {
            assert!(!password_fits(&Secret::new(bad)), "{bad:?}");
        }
        SipConfig::default().validate().unwrap();
    }

    #[test]
    fn nothing_can_add_a_parameter_or_a_line() {
        for (text, key) in [
            (r#"account = "sip:a@b;auth_pass=x""#, "sip.account"),
            ("account = \"sip:a@b\\n<sip:evil@x>\"", "sip.account"),
            (r#"account = "a@b""#, "sip.account"),
            (
                r#"account = "sip:a@b"
                auth_user = "u p""#,
                "sip.auth_user",
            ),
            (r#"outbound_proxy = "proxy""#, "sip.outbound_proxy"),
            (r#"nat = "stun""#, "sip.nat"),
            ("register_interval_s = 5", "sip.register_interval_s"),
        ] {
            assert_eq!(sip(text).validate().map_err(|e| e.path()), Err(key.to_string()), "{text}");
        }
    }

    #[test]
    fn the_written_accounts_file_is_the_owners_alone_and_the_config_gains_its_modules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("cap4-sip-{}", std::process::id()));
        let (base, out) = (dir.join("base"), dir.join("out"));
        std::fs::create_dir_all(&base).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(base.join("config"), "module g711.so\nmodule stun.so\n").unwrap();
        std::fs::write(base.join("accounts"), "<sip:box@127.0.0.1>;regint=0\n").unwrap();
        write_baresip_config(&SipConfig::default(), None, &base, &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("accounts")).unwrap(), "<sip:box@127.0.0.1>;regint=0\n");
        let cfg = sip("account = \"sip:a@b\"\nnat = \"ice\"\nstun_server = \"stun:s\"\n");
        write_baresip_config(&cfg, Some(&Secret::new("s3cret")), &base, &out).unwrap();
        let accounts = std::fs::read_to_string(out.join("accounts")).unwrap();
        assert!(accounts.contains("<sip:a@b;transport=udp>;auth_pass=s3cret;"), "{accounts}");
        assert_eq!(std::fs::metadata(out.join("accounts")).unwrap().permissions().mode() & 0o777, 0o600);
        let config = std::fs::read_to_string(out.join("config")).unwrap();
        assert_eq!(config.matches("module stun.so").count(), 1, "{config}");
        assert!(config.contains("module ice.so"), "{config}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
