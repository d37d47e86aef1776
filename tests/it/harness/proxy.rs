//! A fault-injecting HTTP proxy in front of a real docker-registry: it produces the faults a healthy registry
//! never does (resets mid-body, 5xx bursts, 429 with Retry-After, corrupted bytes, a truncated upload), on
//! chosen requests, a chosen number of times, and records every request it saw.
//!
//! One request per connection (`Connection: close` both ways) keeps it simple and the faults precise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and `Retry-After`, if given) without asking the registry.
    Status(u16, Option<u32>),
    /// Answer with this status and a distribution-spec error (code, message), as a real service refusing the
    /// request would (ECR's NAME_UNKNOWN for a repository it does not have).
    Refuse(u16, &'static str, String),
    /// Forward, but close the connection after this many bytes of the response body.
    ResetAfter(usize),
    /// Forward, with the byte at this offset of the response body flipped.
    Corrupt(usize),
    /// Read this many bytes of the request body, then close without answering.
    CutUpload(usize),
    /// Hold the request, unanswered, until `release` (so a test can act while a transfer is in flight).
    Hold,
    /// Close the connection at once, as a registry that has died does.
    Drop,
    /// Forward the request with the byte at this offset of its body flipped.
    CorruptUpload(usize),
    /// Answer `307 Temporary Redirect` to this URL (blob GETs redirected to object storage).
    Redirect(String),
    /// Forward with the byte at `at` of the response body flipped, and hold the rest of the body after
    /// `hold_after` bytes until `release` (a corrupted download the client is partway through).
    CorruptThenHold { at: usize, hold_after: usize },
    /// Forward without the request's `Range` header, as a registry that does not serve ranges answers: the
    /// whole body, 200.
    IgnoreRange,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    /// The request path must contain this.
    pub path: String,
    pub fault: Fault,
    /// How many more requests it applies to (`usize::MAX`: always).
    pub times: usize,
    /// How many matching requests it lets through untouched before it applies.
    pub skip: usize,
}

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    /// Its `Content-Range` header (where an upload's chunk goes).
    pub content_range: Option<String>,
    /// Its body's Content-Length (what the client meant to send).
    pub length: usize,
    /// The fault it met, if any.
    pub fault: Option<Fault>,
    /// When its head arrived (so a test can measure the wait before a retry).
    pub at: std::time::Instant,
}

impl Seen {
    pub fn faulted(&self) -> bool {
        self.fault.is_some()
    }
}

/// Decides per request (method, path) whether it meets a fault, before the rules are asked.
pub type Gate = Arc<dyn Fn(&str, &str) -> Option<Fault> + Send + Sync>;

pub struct FaultProxy {
    pub port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    /// (requests held, released?) for `Fault::Hold`.
    held: Arc<(Mutex<(usize, bool)>, Condvar)>,
    /// Bytes a second each response body may go at (0: as fast as loopback goes).
    rate: Arc<AtomicUsize>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> FaultProxy {
        FaultProxy::start_gated(upstream_port, Arc::new(|_: &str, _: &str| None))
    }

    /// A proxy whose `gate` sees every request first (a service's own refusals, decided per request).
    pub fn start_gated(upstream_port: u16, gate: Gate) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let held: Arc<(Mutex<(usize, bool)>, Condvar)> = Arc::default();
        let rate: Arc<AtomicUsize> = Arc::default();
        let (r, s, f, h, w) = (rules.clone(), seen.clone(), stop.clone(), held.clone(), rate.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if f.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s, h, g, w) = (r.clone(), s.clone(), h.clone(), gate.clone(), w.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream_port, &g, &r, &s, &h, &w);
                });
            }
        });
        FaultProxy { port, rules, seen, stop, held, rate }
    }

    /// From now on each response body goes at most `bytes_per_sec`, as through a registry or object store that
    /// caps each connection (faults still apply on top).
    pub fn cap_each_connection(&self, bytes_per_sec: usize) {
        self.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Block until a request is being held (true), or 30 seconds pass (false).
    pub fn wait_held(&self) -> bool {
        let (state, cv) = &*self.held;
        let guard = state.lock().unwrap();
        let (guard, _) = cv.wait_timeout_while(guard, std::time::Duration::from_secs(30), |s| s.0 == 0).unwrap();
        guard.0 > 0
    }

    /// Let held requests go on (to the registry).
    pub fn release(&self) {
        let (state, cv) = &*self.held;
        state.lock().unwrap().1 = true;
        cv.notify_all();
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn add(&self, method: &'static str, path: &str, fault: Fault, times: usize) {
        self.add_after(method, path, 0, fault, times);
    }

    /// `add`, but the first `skip` matching requests pass untouched (hold the second upload, not the first).
    pub fn add_after(&self, method: &'static str, path: &str, skip: usize, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule { method, path: path.to_string(), fault, times, skip });
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.method == method && s.path.contains(path)).count()
    }

    /// Every request seen so far, in the order their heads arrived.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The first request that met a fault matching `is`, and the first later one with the same method and path
    /// (its retry), if any.
    pub fn retry_of(&self, is: impl Fn(&Fault) -> bool) -> Option<(Seen, Option<Seen>)> {
        let seen = self.requests();
        let i = seen.iter().position(|s| s.fault.as_ref().is_some_and(&is))?;
        let first = seen[i].clone();
        let retry = seen[i + 1..].iter().find(|s| s.method == first.method && s.path == first.path).cloned();
        Some((first, retry))
    }

    pub fn ranged(&self, path: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.path.contains(path) && s.range.is_some()).count()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle(
    client: TcpStream,
    upstream_port: u16,
    gate: &Gate,
    rules: &Mutex<Vec<Rule>>,
    seen: &Mutex<Vec<Seen>>,
    held: &(Mutex<(usize, bool)>, Condvar),
    rate: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    // Request head.
    let mut head = Vec::new();
    let mut line = String::new();
    let mut content_length = 0usize;
    let mut range = None;
    let mut content_range = None;
    let mut request_line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if request_line.is_empty() {
            request_line = line.clone();
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("range:") {
            range = Some(line[6..].trim().to_string());
        }
        if lower.starts_with("content-range:") {
            content_range = Some(line["content-range:".len()..].trim().to_string());
        }
        if lower.starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            head.extend_from_slice(b"Connection: close\r\n\r\n");
            break;
        }
        head.extend_from_slice(line.as_bytes());
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let fault = gate(&method, &path).or_else(|| {
        let mut rules = rules.lock().unwrap();
        let hit = rules.iter_mut().find(|r| r.times > 0 && r.method == method && path.contains(&r.path));
        hit.and_then(|r| {
            if r.skip > 0 {
                r.skip -= 1;
                return None;
            }
            if r.times != usize::MAX {
                r.times -= 1;
            }
            Some(r.fault.clone())
        })
    });
    if matches!(fault, Some(Fault::IgnoreRange)) {
        let text = String::from_utf8_lossy(&head).into_owned();
        head = text
            .split_inclusive("\r\n")
            .filter(|l| !l.to_ascii_lowercase().starts_with("range:"))
            .collect::<String>()
            .into_bytes();
    }
    let at = std::time::Instant::now();
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range,
        content_range,
        length: content_length,
        fault: fault.clone(),
        at,
    });

    match fault {
        Some(Fault::Status(code, retry_after)) => {
            // Drain the body so the client is not cut off mid-request.
            std::io::copy(&mut (&mut reader).take(content_length as u64), &mut std::io::sink())?;
            let extra = retry_after.map(|s| format!("Retry-After: {s}\r\n")).unwrap_or_default();
            let body = format!("{{\"errors\":[{{\"code\":\"INJECTED\",\"message\":\"injected {code}\"}}]}}");
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Refuse(code, error, message)) => {
            std::io::copy(&mut (&mut reader).take(content_length as u64), &mut std::io::sink())?;
            let body = serde_json::json!({"errors": [{"code": error, "message": message}]}).to_string();
            write!(
                client,
                "HTTP/1.1 {code} Refused\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            return Ok(());
        }
        Some(Fault::Hold) => hold(held),
        Some(Fault::Drop) => return Ok(()),
        Some(Fault::Redirect(to)) => {
            write!(
                client,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        Some(Fault::CutUpload(n)) => {
            std::io::copy(&mut (&mut reader).take(n.min(content_length) as u64), &mut std::io::sink())?;
            return Ok(()); // dropped: the client sees the connection close mid-request
        }
        _ => {}
    }

    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.write_all(&head)?;
    if let Some(Fault::CorruptUpload(at)) = fault {
        let mut body = vec![0u8; content_length];
        reader.read_exact(&mut body)?;
        if at < body.len() {
            body[at] ^= 0x20;
        }
        upstream.write_all(&body)?;
    } else {
        std::io::copy(&mut (&mut reader).take(content_length as u64), &mut upstream)?;
    }
    // Response: head unchanged (but for Connection), then the body with the fault applied.
    let mut up = BufReader::new(upstream);
    loop {
        line.clear();
        if up.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        if line == "\r\n" {
            client.write_all(b"Connection: close\r\n\r\n")?;
            break;
        }
        client.write_all(line.as_bytes())?;
    }
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let (body_started, rate) = (std::time::Instant::now(), rate.load(Ordering::SeqCst));
    loop {
        // A capped wire: each 64 KiB waits its turn (simulated bandwidth, not synchronisation).
        if rate > 0 {
            let due = std::time::Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(body_started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
        let n = up.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match fault {
            Some(Fault::ResetAfter(limit)) if sent + n > limit => {
                client.write_all(&chunk[..limit.saturating_sub(sent)])?;
                client.flush()?;
                let _ = client.shutdown(std::net::Shutdown::Both);
                return Ok(());
            }
            Some(Fault::Corrupt(at)) if at >= sent && at < sent + n => chunk[at - sent] ^= 0x20,
            Some(Fault::CorruptThenHold { at, hold_after }) => {
                if at >= sent && at < sent + n {
                    chunk[at - sent] ^= 0x20;
                }
                if sent < hold_after && sent + n >= hold_after {
                    client.write_all(chunk)?;
                    client.flush()?;
                    sent += n;
                    hold(held);
                    continue;
                }
            }
            _ => {}
        }
        client.write_all(chunk)?;
        sent += n;
    }
    Ok(())
}

/// Count this request as held and wait until the test releases it.
fn hold(held: &(Mutex<(usize, bool)>, Condvar)) {
    let (state, cv) = held;
    let mut g = state.lock().unwrap();
    g.0 += 1;
    cv.notify_all();
    while !g.1 {
        g = cv.wait(g).unwrap();
    }
}
