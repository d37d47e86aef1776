//! Shared test harness: real registries, fixture images, and a runner for the `bundle` binary.

pub mod charts;
pub mod clients;
pub mod fixtures;
pub mod moto;
pub mod proxy;
pub mod registry;
pub mod serve;
pub mod tls;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use charts::*;
pub use clients::{Containerd, Podman, bounded, succeeded};
pub use fixtures::*;
pub use moto::*;
pub use proxy::{Fault, FaultProxy, Seen};
pub use registry::*;
pub use serve::ServeProcess;
pub use tls::{server_cert, test_ca};
pub use token::{TOKEN_USER, TokenRegistry};

/// The result of one `bundle` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, 0, "bundle failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub fn failure(self) -> Run {
        assert_ne!(self.code, 0, "bundle should have failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(self.code, 1, "failures exit 1\nstderr:\n{}", self.stderr);
        self
    }
}

/// A scratch directory that is also the `bundle` process's HOME, DOCKER_CONFIG and TMPDIR, so nothing of
/// the machine running the tests leaks in.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        Workspace { dir, env: Vec::new() }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn env(&mut self, k: &str, v: &str) {
        self.env.push((k.into(), v.into()));
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bundle"));
        c.args(args);
        self.environment(&mut c);
        c
    }

    /// Run `bundle` with a tmpfs of `size` (`8m`) mounted on the workspace's `dir`, in a mount namespace of its
    /// own (`unshare -rm`: no privilege needed, nothing left mounted): a real filesystem that is nearly full.
    pub fn bundle_on_small_disk(&self, dir: &str, size: &str, args: &[&str]) -> Run {
        std::fs::create_dir_all(self.path(dir)).unwrap();
        let script =
            format!("mount -t tmpfs -o size={size} tmpfs '{}' && exec \"$0\" \"$@\"", self.path(dir).display());
        let mut c = Command::new("timeout");
        c.args(["120", "unshare", "-rm", "sh", "-c", &script, env!("CARGO_BIN_EXE_bundle")]).args(args);
        self.environment(&mut c);
        let run = Run::from(c.output().expect("run unshare"));
        assert!(!run.stderr.contains("unshare: "), "cannot make a mount namespace here: {}", run.stderr);
        run
    }

    fn environment(&self, c: &mut Command) {
        c.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("DOCKER_CONFIG", self.dir.path().join(".docker"))
            .env("TMPDIR", self.dir.path().join("tmp"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
    }

    /// `bundle export --image R… -o out`, which must succeed.
    pub fn export(&self, refs: &[String], out: &str) -> Run {
        let mut args = vec!["export"];
        for r in refs {
            args.extend(["--image", r.as_str()]);
        }
        args.extend(["-o", out]);
        self.bundle(&args).success()
    }

    pub fn bundle(&self, args: &[&str]) -> Run {
        Run::from(self.command(args).output().expect("run bundle"))
    }

    /// Run `bundle` with its address space limited to `bytes` (RLIMIT_AS): an allocation the input asks for but
    /// a sound reader never makes fails the run instead of passing unnoticed on a machine with memory to spare.
    pub fn bundle_within(&self, bytes: u64, args: &[&str]) -> Run {
        use std::os::unix::process::CommandExt as _;
        let mut command = self.command(args);
        // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        Run::from(command.output().expect("run bundle"))
    }

    /// Run `bundle` with stdout a pipe whose reader is already gone (`bundle … | head -c 0`).
    pub fn bundle_into_closed_pipe(&self, args: &[&str]) -> Run {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        let out = self.command(args).stdout(writer).stderr(std::process::Stdio::piped()).output().expect("run bundle");
        Run::from(out)
    }

    /// Files left in TMPDIR (there should be none after any run).
    pub fn tmp_leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Everything in `dir` (names), for "nothing half-written" checks.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Replace volatile parts of output (ports, temp paths, durations, digests) for snapshots.
pub fn normalise(s: &str, ws: &Workspace, registries: &[&Registry]) -> String {
    let mut out = s.replace(&ws.dir.path().display().to_string(), "[WS]");
    for r in registries {
        out = out.replace(&r.port.to_string(), "[PORT]");
    }
    let re_digest = |s: &str| {
        let mut res = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("sha256:") {
            res.push_str(&rest[..i]);
            let tail = &rest[i + 7..];
            let n = tail.bytes().take_while(|b| b.is_ascii_hexdigit()).count();
            res.push_str(if n >= 12 { "sha256:[HEX]" } else { &rest[i..i + 7 + n] });
            rest = &tail[n..];
        }
        res.push_str(rest);
        res
    };
    re_digest(&out)
}
