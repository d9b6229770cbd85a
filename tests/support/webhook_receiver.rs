//! A webhook receiver for the tests: an HTTP/1.1 server on 127.0.0.1 that
//! answers the first `refuse_first` requests 503 and the rest 200 (or all
//! 503 while told to refuse), and
//! keeps every request it got (headers, body, and what it answered), as a
//! receiver behind a flaky network would see them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub struct Receiver {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub fn start(refuse_first: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().expect("its address").port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = got.clone();
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse_all = refusing.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let Some((path, headers, body)) = read_request(&mut stream) else { continue };
                let mut got = log.lock().expect("receiver log");
                let refuse = got.len() < refuse_first || refuse_all.load(std::sync::atomic::Ordering::SeqCst);
                let answered = if refuse { 503 } else { 200 };
                got.push(Received { path, headers, body, answered });
                drop(got);
                let reason = if answered == 200 { "OK" } else { "Service Unavailable" };
                let _ = write!(stream, "HTTP/1.1 {answered} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Receiver { port, got, refusing }
    }

    /// From now on, answer every request 503 (`true`) or as at start.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().expect("receiver log").clone()
    }

    /// The deliveries it accepted (answered 200).
    pub fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.answered == 200).collect()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, HashMap<String, String>, Vec<u8>)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, headers, body))
}
