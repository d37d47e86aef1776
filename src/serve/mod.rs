//! `bundle serve`: the archive is the registry inside the gap, read where it lies, with no extraction and no
//! second copy.
//!
//! Sites without a registry yet, a registry being bootstrapped, an edge node, a laptop demo: they pull from the
//! bundle they carried in. The archives are proven at start (their sidecars, or in full), their fronts give the
//! catalog (`catalog`: names as import would push them, through the same `Destination`), and each request is
//! answered from it (`routes`), blobs decoded frame by frame as they are sent (`blob`). Read-only: the server
//! writes nothing, anywhere.

mod access;
mod blob;
pub mod catalog;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use catalog::{Catalog, CatalogError, Served};
use hyper_util::rt::TokioIo;

use crate::archive::contents::Checked;
use crate::archive::proof::{self, ProofError};
use crate::oci::destination::Destination;
use crate::support::printer::Printer;

/// Blobs read at once across every client: memory is bounded by this times a response's chunks in flight.
const READERS: usize = 32;
/// How long in-flight responses may take to end after SIGINT or SIGTERM.
const DRAIN: Duration = Duration::from_secs(30);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// One `bundle serve`, as the flags said.
pub struct ServeJob {
    pub inputs: Vec<PathBuf>,
    pub listen: SocketAddr,
    /// The names images are served under (the listen address, or `--name`, with `--prefix` and the mapping).
    pub destination: Destination,
    /// Prove every archive by reading it whole, not by its sidecar.
    pub verify_full: bool,
    pub values_out: Option<PathBuf>,
    pub mirrors_out: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`: serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--htpasswd`: basic auth for every request.
    pub htpasswd: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Proof(#[from] ProofError),
    #[error("{} is a docker save archive, which keeps no registry manifests to serve", .0.display())]
    DockerSave(PathBuf),
    #[error("cannot serve these volumes")]
    Volumes(#[source] crate::volumes::VolumeError),
    #[error("the volume set {set} is missing volumes {missing}: serve needs every volume")]
    MissingVolumes { set: String, missing: String },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Delivery(#[from] crate::import::delivery::DeliveryError),
    #[error(transparent)]
    Mirrors(#[from] crate::mirrors::MirrorError),
    #[error(transparent)]
    Access(#[from] access::AccessError),
}

impl crate::support::hint::Hint for ServeError {
    fn hint(&self) -> Option<String> {
        match self {
            ServeError::Proof(e) => e.hint(),
            ServeError::DockerSave(_) => {
                Some("import it into a registry, or export the images again with bundle export".into())
            }
            ServeError::Volumes(e) => e.hint(),
            ServeError::MissingVolumes { .. } => {
                Some("give every volume of the set (or the directory that holds them)".into())
            }
            ServeError::Catalog(e) => e.hint(),
            ServeError::Listen { .. } => Some("choose another --listen address, or stop what holds this one".into()),
            ServeError::Delivery(e) => e.hint(),
            ServeError::Mirrors(e) => e.hint(),
            ServeError::Access(e) => e.hint(),
        }
    }
}

/// Prove and load every input, answer requests until SIGINT or SIGTERM, then let in-flight responses end.
pub async fn serve(printer: &Printer, job: &ServeJob) -> Result<(), ServeError> {
    let tls = match &job.tls {
        Some((cert, key)) => Some(access::tls(cert, key)?),
        None => None,
    };
    let users = match &job.htpasswd {
        Some(path) => Some(access::Users::load(path)?),
        None => None,
    };
    let inputs = load(printer, job).await?;
    let catalog = Catalog::build(&inputs, &job.destination)?;
    write_configs(printer, job, &inputs, &catalog)?;
    let listener = tokio::net::TcpListener::bind(job.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: job.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen { addr: job.listen, source })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    printer.info(format!(
        "Serving {} images ({} repositories, {} blobs) of {} at {scheme}://{addr} as {}{}; read-only; Ctrl-C stops",
        catalog.pushed.len(),
        catalog.repositories.len(),
        catalog.blobs.len(),
        inputs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", "),
        crate::chart::values_out::destination_text(&job.destination),
        if users.is_some() { ", basic auth" } else { "" },
    ));
    let log_printer = printer.clone();
    let warn_printer = printer.clone();
    let server = Arc::new(routes::Server {
        catalog,
        readers: Arc::new(tokio::sync::Semaphore::new(READERS)),
        users,
        log: Box::new(move |line| log_printer.detail(line)),
        warn: Arc::new(move |line| warn_printer.warn(line)),
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|source| ServeError::Listen { addr, source })?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| ServeError::Listen { addr, source })?;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (server, watcher, tls) = (server.clone(), graceful.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => connection(stream, server, watcher).await,
                // The handshake runs in the connection's own task, bounded, so a slow client holds up no other.
                Some(acceptor) => {
                    if let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        connection(stream, server, watcher).await;
                    }
                }
            }
        });
    }
    drop(listener);
    printer.info("Stopping: no new connections; letting the responses in flight end");
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        printer.warn(format!("responses still in flight after {DRAIN:?} were cut off"));
    }
    Ok(())
}

/// One connection's requests, until it closes or the server drains.
async fn connection<S>(stream: S, server: Arc<routes::Server>, watcher: hyper_util::server::graceful::Watcher)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| routes::handle(server.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    let _ = watcher.watch(conn).await;
}

/// Every input proven and loaded: archives and layout directories on their own, volumes put together by set.
async fn load(printer: &Printer, job: &ServeJob) -> Result<Vec<Served>, ServeError> {
    let mut served = Vec::new();
    let mut volumes: Vec<crate::volumes::set::GivenVolume> = Vec::new();
    for path in &job.inputs {
        let (archive, contents) = prove(printer, path, job.verify_full).await?;
        if contents.volume().is_some() {
            volumes.push(crate::volumes::set::GivenVolume { path: path.clone(), archive, contents });
            continue;
        }
        let blobs = contents.blobs.iter().map(|(d, e)| (d.clone(), vec![(archive.clone(), *e)])).collect();
        let sha256 = crate::archive::checksum::read_sidecar(path).ok().flatten().map(|d| d.hex().to_string());
        served.push(Served { name: path.display().to_string(), contents, blobs, sha256 });
    }
    // Volumes of each set together.
    while let Some(first) = volumes.first() {
        let set = first.contents.volume().expect("a volume").set.clone();
        let (this, rest): (Vec<_>, Vec<_>) =
            volumes.into_iter().partition(|v| v.contents.volume().is_some_and(|r| r.set == set));
        volumes = rest;
        let name = this.iter().map(|v| v.path.display().to_string()).collect::<Vec<_>>().join(", ");
        let assembled = crate::volumes::set::assemble(this).map_err(ServeError::Volumes)?;
        if !assembled.missing.is_empty() {
            return Err(ServeError::MissingVolumes {
                set: set.to_string(),
                missing: assembled.missing.iter().map(|m| m.number.to_string()).collect::<Vec<_>>().join(", "),
            });
        }
        let blobs = assembled
            .contents
            .blobs
            .keys()
            .filter_map(|d| assembled.origin.segments(d).map(|s| (d.clone(), s)))
            .collect();
        served.push(Served { name, contents: assembled.contents, blobs, sha256: None });
    }
    Ok(served)
}

/// One input proven: planned from its front and checked against its sidecar (or read whole), as import does.
async fn prove(
    printer: &Printer,
    path: &std::path::Path,
    full: bool,
) -> Result<(Arc<crate::archive::ArchiveFile>, crate::archive::BundleContents), ServeError> {
    if !full && let Some((archive, contents)) = proof::front(path).await {
        let (archive, contents, _) =
            proof::Pending::start(printer, path).prove(printer, path, archive, contents).await?;
        return Ok((archive, contents));
    }
    match proof::verify_any(printer, path).await? {
        (archive, Checked::Layout(contents)) => Ok((archive, contents)),
        (_, Checked::DockerSave(_)) => Err(ServeError::DockerSave(path.to_path_buf())),
    }
}

/// `--values-out` and `--mirrors-out`: the files import writes for this address.
fn write_configs(printer: &Printer, job: &ServeJob, inputs: &[Served], catalog: &Catalog) -> Result<(), ServeError> {
    if let Some(out) = &job.values_out {
        let mut charts: Vec<&crate::oci::layout::ChartRecord> = Vec::new();
        for c in inputs.iter().filter_map(|i| i.contents.metadata.as_ref()).flat_map(|m| m.all_charts()) {
            if !charts.iter().any(|x| x.name == c.name) {
                charts.push(c);
            }
        }
        crate::import::delivery::write_values_for(printer, &charts, &job.destination, out)?;
    }
    if let Some(dir) = &job.mirrors_out {
        let files: std::collections::BTreeSet<String> = inputs
            .iter()
            .filter_map(|i| i.contents.metadata.as_ref())
            .flat_map(|m| m.files.iter().map(|f| f.image.clone()))
            .collect();
        let host = crate::mirrors::MirrorHost {
            registry: job.destination.registry.clone(),
            prefix: job.destination.prefix.clone(),
            plain_http: job.tls.is_none(),
            skip_verify: false,
            ca: None,
            client: None,
        };
        let pushed = catalog.pushed.iter().filter(|(s, _)| !files.contains(&s.to_string())).map(|(s, t)| (s, t));
        let set = crate::mirrors::MirrorSet::new(pushed, host)?;
        set.write(dir)?;
        printer.info(format!(
            "Wrote the mirror configs for this server to {}; docs/mirrors.md says where each goes",
            dir.display()
        ));
    }
    Ok(())
}
