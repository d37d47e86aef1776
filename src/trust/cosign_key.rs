//! cosign's encrypted private key (`cosign generate-key-pair`'s `cosign.key`): a PEM block `ENCRYPTED SIGSTORE
//! PRIVATE KEY` (`ENCRYPTED COSIGN PRIVATE KEY` before cosign 2) holding JSON from go-securesystemslib's
//! `encrypted` package: scrypt derives a 32-byte key from the password and the salt, NaCl secretbox
//! (XSalsa20-Poly1305) seals the PKCS#8 DER of the EC P-256 key under it.

use serde::Deserialize;

pub const LABELS: [&str; 2] = ["ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY"];

/// scrypt's cost is 2^log_n; cosign uses 2^15. Above 2^20 (1 GiB of memory at r = 8) is refused, not attempted.
const MAX_LOG_N: u8 = 20;

#[derive(Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine as _;
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

pub enum Opened {
    /// The PKCS#8 DER inside.
    Key(Vec<u8>),
    WrongPassword,
    /// Not the format described above (what is wrong, without any of the content).
    Malformed(String),
}

/// Open the PEM block's content (the JSON) with `password`.
pub fn open(json: &[u8], password: &str) -> Opened {
    use crypto_secretbox::aead::{Aead as _, KeyInit as _};
    let env: Envelope = match serde_json::from_slice(json) {
        Ok(e) => e,
        Err(e) => return Opened::Malformed(format!("its content is not cosign's key JSON ({})", e.classify_name())),
    };
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        return Opened::Malformed(format!(
            "kdf `{}` and cipher `{}` (cosign uses scrypt and nacl/secretbox)",
            env.kdf.name, env.cipher.name
        ));
    }
    let n = env.kdf.params.n;
    if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > MAX_LOG_N as u32 {
        return Opened::Malformed(format!("scrypt N = {n} (a power of two up to 2^{MAX_LOG_N} is expected)"));
    }
    let params = match scrypt::Params::new(n.trailing_zeros() as u8, env.kdf.params.r, env.kdf.params.p, 32) {
        Ok(p) => p,
        Err(_) => return Opened::Malformed("scrypt parameters out of range".into()),
    };
    let mut key = [0u8; 32];
    if scrypt::scrypt(password.as_bytes(), &env.kdf.salt, &params, &mut key).is_err() {
        return Opened::Malformed("scrypt parameters out of range".into());
    }
    if env.cipher.nonce.len() != 24 {
        return Opened::Malformed("a secretbox nonce that is not 24 bytes".into());
    }
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    let nonce = crypto_secretbox::Nonce::from_slice(&env.cipher.nonce);
    match cipher.decrypt(nonce, env.ciphertext.as_slice()) {
        Ok(der) => Opened::Key(der),
        Err(_) => Opened::WrongPassword,
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "fields missing or of the wrong type",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}
