//! Child processes we do not control (helm, docker credential helpers), run to the end or until a timeout.
//!
//! A child that never ends must not hang `bundle`: each run has a deadline, and one that overstays is killed
//! and reaped. Both pipes are drained on threads of their own so a chatty child never blocks on a full pipe.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

#[derive(Debug)]
pub enum RunError {
    Spawn(std::io::Error),
    TimedOut,
}

/// Run `cmd` with `stdin` (or none) to the end, or until `timeout`, whichever comes first.
pub fn run_bounded(mut cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Result<Finished, RunError> {
    let input = if stdin.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd.stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(RunError::Spawn)?;
    if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Small inputs (a server name); a child that does not read them fails the write, which is its answer.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send(());
        (child, status)
    });
    let timed_out = rx.recv_timeout(timeout).is_err();
    if timed_out {
        kill(pid);
    }
    let (_child, status): (Child, std::io::Result<ExitStatus>) = waiter.join().expect("the waiter does not panic");
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if timed_out {
        return Err(RunError::TimedOut);
    }
    Ok(Finished { status: status.map_err(RunError::Spawn)?, stdout, stderr })
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

/// SIGKILL by pid: the waiter has not returned, so the child is unreaped and the pid is still its own.
fn kill(pid: u32) {
    // SAFETY: kill(2) with the pid of a child we spawned and have not reaped; no memory is passed.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_that_overstays_is_killed() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started; exec sleep 30"]);
        let t = std::time::Instant::now();
        assert!(matches!(run_bounded(cmd, None, Duration::from_millis(300)), Err(RunError::TimedOut)));
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_status_and_stdin() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "read x; echo \"got $x\"; echo err >&2; exit 3"]);
        let out = run_bounded(cmd, Some(b"hi\n".to_vec()), Duration::from_secs(10)).unwrap();
        assert!(!out.success());
        assert_eq!(out.status.code(), Some(3));
        assert_eq!((out.stdout, out.stderr), (b"got hi\n".to_vec(), b"err\n".to_vec()));
    }
}
