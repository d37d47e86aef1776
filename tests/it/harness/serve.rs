//! `bundle serve` as a process of its own on a free loopback port: started, waited for (its start line), and
//! stopped with SIGTERM as a service manager would; every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Workspace;
use super::registry::free_port;

pub struct ServeProcess {
    pub port: u16,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// `bundle [global…] serve --listen 127.0.0.1:PORT ARGS…`, once it says it is serving.
    pub fn start(ws: &Workspace, global: &[&str], args: &[&str]) -> ServeProcess {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut all: Vec<&str> = global.to_vec();
        all.extend(["serve", "--listen", &listen]);
        all.extend_from_slice(args);
        let mut child = ws
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bundle serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.starts_with("Serving ") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("bundle serve did not start:\n{}", stderr.lock().unwrap().join("\n"));
                }
            }
        }
        ServeProcess { port, child: Some(child), stderr }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status (killed after 60 s) and everything it said.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (status, self.stderr())
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
