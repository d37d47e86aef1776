//! The container clients users load bundles with, run for real: podman (rootful, vfs storage in a temp root, no
//! daemon) and containerd (its daemon started with a temp root and socket, driven through `ctr`). Every command
//! runs under `timeout`, so a stuck client fails its test instead of hanging it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Seconds any one client command may take.
pub const CLIENT_TIMEOUT_SECS: &str = "300";

/// `program args…` in `cwd`, killed after `CLIENT_TIMEOUT_SECS`.
pub fn bounded(program: &str, args: &[&str], cwd: &Path) -> Output {
    bounded_with(program, args, &[], cwd)
}

/// `bounded`, with `env` added to the environment.
pub fn bounded_with(program: &str, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    Command::new("timeout")
        .args(["--kill-after=10", CLIENT_TIMEOUT_SECS, program])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"))
}

#[track_caller]
pub fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with an image store of its own.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    pub fn new() -> Podman {
        Podman { dir: tempfile::tempdir().expect("podman temp dir") }
    }

    pub fn run(&self, args: &[&str], cwd: &Path) -> Output {
        self.run_with(args, &[], cwd)
    }

    /// `run`, with `env` added (`CONTAINERS_REGISTRIES_CONF`, say).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ];
        all.extend_from_slice(args);
        bounded_with("podman", &all, env, cwd)
    }

    /// `(name, manifest digest, image ID)` of every image in the store.
    pub fn images(&self) -> Vec<(String, String, String)> {
        let out = succeeded("podman images", &self.run(&["images", "--format", "json"], self.dir.path()));
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("podman images json");
        let mut images = Vec::new();
        for i in list {
            let id = format!("sha256:{}", i["Id"].as_str().unwrap());
            let digest = i["Digest"].as_str().unwrap_or_default().to_string();
            for name in i["Names"].as_array().into_iter().flatten() {
                images.push((name.as_str().unwrap().to_string(), digest.clone(), id.clone()));
            }
        }
        images.sort();
        images
    }
}

/// A containerd daemon on a socket of its own; stopped when dropped.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = tempfile::tempdir().expect("containerd temp dir");
        let p = dir.path();
        // The CRI plugin wants a node around it; nothing here needs it.
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
            p.join("root").display(),
            p.join("state").display(),
            p.join("containerd.sock").display()
        );
        std::fs::write(p.join("config.toml"), config).unwrap();
        let mut child = Command::new("containerd")
            .arg("--config")
            .arg(p.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start containerd (apt-get install containerd)");
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut log = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("containerd successfully booted") => break,
                Ok(line) => log.push(line),
                Err(_) => {
                    let _ = child.kill();
                    panic!("containerd did not start:\n{}", log.join("\n"));
                }
            }
        }
        // Keep draining the log so the daemon never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        Containerd { dir, child }
    }

    /// `ctr -a SOCKET -n k8s.io ARGS…`, reading `stdin` when given. The native snapshotter unpacks anywhere
    /// (overlayfs needs a kernel and mounts a test machine may not give).
    pub fn ctr(&self, args: &[&str], stdin: Option<Stdio>, cwd: &Path) -> Output {
        let socket = self.dir.path().join("containerd.sock");
        let mut cmd = Command::new("timeout");
        cmd.args(["--kill-after=10", CLIENT_TIMEOUT_SECS, "ctr", "-a", socket.to_str().unwrap(), "-n", "k8s.io"])
            .args(args)
            .env("CONTAINERD_SNAPSHOTTER", "native")
            .current_dir(cwd);
        cmd.stdin(stdin.unwrap_or_else(Stdio::null));
        cmd.output().expect("run ctr")
    }

    /// `(name, digest)` of every image containerd holds.
    pub fn images(&self) -> Vec<(String, String)> {
        let out = succeeded("ctr images ls", &self.ctr(&["images", "ls"], None, self.dir.path()));
        let mut images: Vec<(String, String)> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
            })
            .collect();
        images.sort();
        images
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
