//! A docker-registry in token-auth mode (the Bearer flow Harbor, Quay, GitLab and Nexus use) and the token
//! service it trusts, written here: it checks Basic credentials and issues ES256 JWTs for exactly the scopes
//! asked for, signed by a key whose certificate is the registry's `rootcertbundle`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, KeyPair, SigningKey};

use super::Workspace;
use super::registry::{Registry, RegistryOptions};

pub const TOKEN_USER: &str = "robot";
pub const TOKEN_PASSWORD: &str = "token-flow-s3cret";
const SERVICE: &str = "bundle-test-registry";
const ISSUER: &str = "bundle-test-issuer";

pub struct TokenRegistry {
    pub registry: Registry,
    pub tokens_issued: Arc<AtomicUsize>,
    /// The `scope` parameters of each token request, in order, for assertions on mounts (one token with push
    /// on the target and pull on the source repository).
    pub token_requests: Arc<Mutex<Vec<Vec<String>>>>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// ASN.1 DER ECDSA signature (SEQUENCE of two INTEGERs) to the raw 64-byte r||s form JWS uses.
fn der_to_raw(der: &[u8]) -> Vec<u8> {
    let mut i = 2; // SEQUENCE tag and (short) length
    let mut out = Vec::new();
    for _ in 0..2 {
        assert_eq!(der[i], 0x02, "INTEGER");
        let len = der[i + 1] as usize;
        let int = &der[i + 2..i + 2 + len];
        let int = if int.len() > 32 { &int[int.len() - 32..] } else { int };
        out.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        out.extend_from_slice(int);
        i += 2 + len;
    }
    out
}

impl TokenRegistry {
    pub fn start(ws: &Workspace) -> TokenRegistry {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "bundle test token signer");
        let cert = params.self_signed(&key).unwrap();
        let bundle = ws.write("token-signer.pem", &cert.pem());
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());

        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(AtomicUsize::new(0));
        let token_requests = Arc::new(Mutex::new(Vec::new()));
        let (flag, count, asked) = (stop.clone(), issued.clone(), token_requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                let mut authorization = String::new();
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                    if h.to_ascii_lowercase().starts_with("authorization:") {
                        authorization = h[14..].trim().to_string();
                    }
                    h.clear();
                }
                let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{TOKEN_USER}:{TOKEN_PASSWORD}"))
                );
                if authorization != expected {
                    let _ =
                        conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let mut access = Vec::new();
                let scopes: Vec<String> =
                    url.query_pairs().filter(|(k, _)| k == "scope").map(|(_, v)| v.into()).collect();
                asked.lock().unwrap().push(scopes);
                for (k, v) in url.query_pairs() {
                    if k == "scope" {
                        let parts: Vec<&str> = v.splitn(3, ':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
                        }
                    }
                }
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                let claims = serde_json::json!({
                    "iss": ISSUER, "sub": TOKEN_USER, "aud": SERVICE, "exp": now + 300, "nbf": now - 10, "iat": now,
                    "jti": format!("{}", fastrand::u64(..)), "access": access,
                });
                let signing_input =
                    format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
                let signature = der_to_raw(&key.sign(signing_input.as_bytes()).unwrap());
                let token = format!("{signing_input}.{}", b64url(&signature));
                count.fetch_add(1, Ordering::SeqCst);
                // `access_token` only: the client must accept either name.
                let body = serde_json::json!({"access_token": token, "expires_in": 300}).to_string();
                let _ = conn.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
            }
        });

        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            bundle.display()
        );
        let registry = Registry::start_with(RegistryOptions { auth_yaml: Some(auth), ..Default::default() });
        TokenRegistry { registry, tokens_issued: issued, token_requests, stop, port }
    }

    /// A token for `scope`, fetched the way any client would, for assertions.
    pub fn token(&self, scope: &str) -> String {
        let r = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}/token?service={SERVICE}&scope={scope}", self.port))
            .basic_auth(TOKEN_USER, Some(TOKEN_PASSWORD))
            .send()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().unwrap()).unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }
}
