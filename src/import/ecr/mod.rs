//! Amazon ECR as an import destination: repositories must exist before a push, with the settings a regulated
//! site requires, and the data plane authenticates with a token from `GetAuthorizationToken`.
//!
//! The control plane goes through the AWS SDK, so the whole credential chain works (environment, profiles with
//! SSO or credential_process, web identity for EKS IRSA, ECS and instance metadata) and `AWS_ENDPOINT_URL_ECR`
//! / `AWS_ENDPOINT_URL` point it at a VPC endpoint (or, in tests, moto).

pub mod detect;
pub mod session;

use std::collections::BTreeMap;

use aws_sdk_ecr::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_ecr::types::{
    EncryptionConfiguration, EncryptionType, ImageScanningConfiguration, ImageTagMutability,
    ImageTagMutabilityExclusionFilter, ImageTagMutabilityExclusionFilterType, Tag,
};
use base64::Engine as _;
use serde::Deserialize;

pub use detect::{EcrRegistry, detect, validate_repository_name};

use crate::registry::credentials::Credentials;

/// Tag mutability of a repository, as ECR names it (flags accept any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MutabilityMode {
    Mutable,
    Immutable,
    MutableWithExclusion,
    ImmutableWithExclusion,
}

impl MutabilityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MutabilityMode::Mutable => "MUTABLE",
            MutabilityMode::Immutable => "IMMUTABLE",
            MutabilityMode::MutableWithExclusion => "MUTABLE_WITH_EXCLUSION",
            MutabilityMode::ImmutableWithExclusion => "IMMUTABLE_WITH_EXCLUSION",
        }
    }

    fn with_exclusion(self) -> bool {
        matches!(self, MutabilityMode::MutableWithExclusion | MutabilityMode::ImmutableWithExclusion)
    }
}

/// Encryption of a created repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
pub enum Encryption {
    #[serde(rename = "AES256")]
    #[value(name = "AES256")]
    Aes256,
    #[serde(rename = "KMS")]
    #[value(name = "KMS")]
    Kms,
}

impl Encryption {
    pub fn as_str(self) -> &'static str {
        match self {
            Encryption::Aes256 => "AES256",
            Encryption::Kms => "KMS",
        }
    }
}

/// Repository settings for repositories an import creates (and, with `update_existing`, existing ones).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcrSettings {
    /// Force ECR behaviour for a name that does not look like ECR (a VPC endpoint alias, a proxy).
    #[serde(default)]
    pub enabled: bool,
    pub region: Option<String>,
    pub registry_id: Option<String>,
    pub scan_on_push: Option<bool>,
    pub tag_mutability: Option<MutabilityMode>,
    /// Wildcard filters for the *_WITH_EXCLUSION mutabilities.
    #[serde(default)]
    pub tag_mutability_exclusions: Vec<String>,
    pub encryption: Option<Encryption>,
    pub kms_key: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Paths of JSON policy files, read when the import starts.
    pub lifecycle_policy: Option<std::path::PathBuf>,
    pub repository_policy: Option<std::path::PathBuf>,
    #[serde(default)]
    pub update_existing: bool,
}

impl EcrSettings {
    /// The `[registry.ecr]` table of a registry config file; relative policy paths are relative to `base_dir`.
    pub fn from_config(table: &toml::Table, base_dir: &std::path::Path) -> Result<EcrSettings, EcrError> {
        let mut s: EcrSettings = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e| EcrError::Settings(format!("[registry.ecr] in the registry config: {e}")))?;
        for p in [&mut s.lifecycle_policy, &mut s.repository_policy].into_iter().flatten() {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        Ok(s)
    }

    /// `over`'s settings win where given.
    pub fn overlay(mut self, over: EcrSettings) -> EcrSettings {
        self.enabled |= over.enabled;
        self.region = over.region.or(self.region);
        self.registry_id = over.registry_id.or(self.registry_id);
        self.scan_on_push = over.scan_on_push.or(self.scan_on_push);
        self.tag_mutability = over.tag_mutability.or(self.tag_mutability);
        if !over.tag_mutability_exclusions.is_empty() {
            self.tag_mutability_exclusions = over.tag_mutability_exclusions;
        }
        self.encryption = over.encryption.or(self.encryption);
        self.kms_key = over.kms_key.or(self.kms_key);
        self.tags.extend(over.tags);
        self.lifecycle_policy = over.lifecycle_policy.or(self.lifecycle_policy);
        self.repository_policy = over.repository_policy.or(self.repository_policy);
        self.update_existing |= over.update_existing;
        self
    }

    /// Check values before any call, and read the policy files.
    pub fn validate(&self) -> Result<Policies, EcrError> {
        let bad = |m: String| EcrError::Settings(m);
        if let Some(m) = self.tag_mutability
            && m.with_exclusion()
            && self.tag_mutability_exclusions.is_empty()
        {
            return Err(bad(format!(
                "tag mutability {} needs at least one exclusion filter (--ecr-tag-mutability-exclusion)",
                m.as_str()
            )));
        }
        if self.kms_key.is_some() && self.encryption != Some(Encryption::Kms) {
            return Err(bad("a KMS key goes with encryption KMS".into()));
        }
        let read = |p: &Option<std::path::PathBuf>, what: &str| -> Result<Option<String>, EcrError> {
            let Some(p) = p else { return Ok(None) };
            let text =
                std::fs::read_to_string(p).map_err(|e| bad(format!("cannot read the {what} {}: {e}", p.display())))?;
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| bad(format!("the {what} {} is not JSON: {e}", p.display())))?;
            Ok(Some(text))
        };
        Ok(Policies {
            lifecycle: read(&self.lifecycle_policy, "lifecycle policy")?,
            repository: read(&self.repository_policy, "repository policy")?,
        })
    }

    /// One line for dry runs and logs.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("scan on push: {}", if self.scan_on_push.unwrap_or(false) { "on" } else { "off" }),
            format!("tag mutability: {}", self.tag_mutability.map_or("MUTABLE", MutabilityMode::as_str)),
            format!(
                "encryption: {}",
                match (self.encryption, &self.kms_key) {
                    (Some(Encryption::Kms), Some(k)) => format!("KMS ({k})"),
                    (Some(Encryption::Kms), None) => "KMS (AWS managed key)".into(),
                    _ => "AES256".into(),
                }
            ),
        ];
        if !self.tag_mutability_exclusions.is_empty() {
            parts.push(format!("mutability exclusions: {}", self.tag_mutability_exclusions.join(",")));
        }
        if !self.tags.is_empty() {
            parts.push(format!(
                "tags: {}",
                self.tags.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            ));
        }
        if let Some(p) = &self.lifecycle_policy {
            parts.push(format!("lifecycle policy: {}", p.display()));
        }
        if let Some(p) = &self.repository_policy {
            parts.push(format!("repository policy: {}", p.display()));
        }
        parts.join(", ")
    }
}

/// Policy documents, read and checked up front.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    pub lifecycle: Option<String>,
    pub repository: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    #[error("ECR {what} failed: {message}")]
    Aws { what: String, message: String, auth: bool },
    #[error("no AWS credentials for ECR: {message}")]
    NoCredentials { message: String },
    #[error("invalid ECR settings: {0}")]
    Settings(String),
    #[error("ECR returned an authorization token that is not base64 `AWS:<password>`")]
    BadToken,
    #[error("cannot get an ECR authorization token")]
    Token(#[source] Box<EcrError>),
    /// `--ecr` on a name that says neither: the account or the region must be given.
    #[error("{registry} is treated as ECR (--ecr) but its {what} is unknown")]
    Unidentified { registry: String, what: &'static str },
    #[error("ECR would refuse {} repository names:\n  - {}", .0.len(), .0.join("\n  - "))]
    RefusedNames(Vec<String>),
}

fn aws_error<E>(what: &str, err: aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>) -> EcrError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_ecr::error::SdkError;
    let status = err.raw_response().map(|r| r.status().as_u16());
    // Some endpoints (and moto) answer auth failures in XML the JSON parser cannot read; find the code anyway.
    let body_code = err
        .raw_response()
        .and_then(|r| r.body().bytes())
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .and_then(|t| Some(t.split_once("<Code>")?.1.split_once("</Code>")?.0.to_string()));
    let code = err.code().map(str::to_string).or(body_code);
    let auth = matches!(status, Some(401 | 403))
        || matches!(
            code.as_deref(),
            Some(
                "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "ExpiredTokenException"
                    | "ExpiredToken"
                    | "InvalidClientTokenId"
                    | "AccessDeniedException"
            )
        );
    let message = match (&err, &code, err.message(), status) {
        (_, Some(c), Some(m), _) => format!("{c}: {m}"),
        (_, Some(c), None, Some(st)) => format!("HTTP {st} ({c})"),
        (SdkError::ServiceError(_), None, _, Some(st)) => format!("HTTP {st}"),
        _ => DisplayErrorContext(&err).to_string(),
    };
    EcrError::Aws { what: what.to_string(), message, auth }
}

/// A repository's tag mutability: the mode and its wildcard exclusion filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagMutability {
    /// MUTABLE, IMMUTABLE, MUTABLE_WITH_EXCLUSION or IMMUTABLE_WITH_EXCLUSION.
    pub mode: String,
    pub exclusions: Vec<String>,
}

impl TagMutability {
    /// What `settings` give a repository created with them.
    pub fn of(settings: &EcrSettings) -> TagMutability {
        TagMutability {
            mode: settings.tag_mutability.map_or("MUTABLE", MutabilityMode::as_str).to_string(),
            exclusions: settings.tag_mutability_exclusions.clone(),
        }
    }

    /// Whether ECR refuses to move `tag` once it exists: under IMMUTABLE every tag, under
    /// IMMUTABLE_WITH_EXCLUSION those matching no filter, under MUTABLE_WITH_EXCLUSION those matching one.
    pub fn is_immutable(&self, tag: &str) -> bool {
        let excluded = || self.exclusions.iter().any(|f| wildcard_match(f, tag));
        match self.mode.as_str() {
            "IMMUTABLE" => true,
            "IMMUTABLE_WITH_EXCLUSION" => !excluded(),
            "MUTABLE_WITH_EXCLUSION" => excluded(),
            _ => false,
        }
    }
}

/// ECR's wildcard filters: `*` matches any run of characters (none included); everything else is literal.
fn wildcard_match(filter: &str, tag: &str) -> bool {
    let mut parts = filter.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = tag.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

fn exclusion_filters(settings: &EcrSettings) -> Result<Vec<ImageTagMutabilityExclusionFilter>, EcrError> {
    settings
        .tag_mutability_exclusions
        .iter()
        .map(|f| {
            ImageTagMutabilityExclusionFilter::builder()
                .filter_type(ImageTagMutabilityExclusionFilterType::Wildcard)
                .filter(f)
                .build()
                .map_err(|e| EcrError::Settings(e.to_string()))
        })
        .collect()
}

/// What the import found or did for one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepositoryState {
    Existing { mutability: TagMutability },
    Created,
    Missing,
}

pub struct Ecr {
    client: aws_sdk_ecr::Client,
    registry_id: String,
}

impl Ecr {
    /// Load the AWS configuration and resolve its credentials now: a missing or broken credential chain is
    /// its own error, named before any request (and never inferred later from a request's failure text).
    pub async fn connect(registry: &EcrRegistry) -> Result<Ecr, EcrError> {
        use aws_sdk_ecr::config::ProvideCredentials as _;
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(registry.region.clone()))
            .load()
            .await;
        let provider = conf
            .credentials_provider()
            .ok_or_else(|| EcrError::NoCredentials { message: "no credential provider is configured".into() })?;
        provider
            .provide_credentials()
            .await
            .map_err(|e| EcrError::NoCredentials { message: DisplayErrorContext(&e).to_string() })?;
        Ok(Ecr { client: aws_sdk_ecr::Client::new(&conf), registry_id: registry.registry_id.clone() })
    }

    /// The repository's tag mutability, or `None` if it does not exist.
    pub async fn describe(&self, name: &str) -> Result<Option<TagMutability>, EcrError> {
        let result =
            self.client.describe_repositories().registry_id(&self.registry_id).repository_names(name).send().await;
        match result {
            Ok(out) => Ok(out.repositories().first().map(|r| TagMutability {
                mode: r.image_tag_mutability().map(|m| m.as_str().to_string()).unwrap_or_else(|| "MUTABLE".into()),
                exclusions: r.image_tag_mutability_exclusion_filters().iter().map(|f| f.filter().to_string()).collect(),
            })),
            Err(e) if e.code() == Some("RepositoryNotFoundException") => Ok(None),
            Err(e) => Err(aws_error(&format!("DescribeRepositories for `{name}`"), e)),
        }
    }

    /// Create `name` with `settings`; a repository someone else created meanwhile counts as success.
    pub async fn create(
        &self,
        name: &str,
        settings: &EcrSettings,
        policies: &Policies,
    ) -> Result<RepositoryState, EcrError> {
        let mut req = self.client.create_repository().registry_id(&self.registry_id).repository_name(name);
        if let Some(scan) = settings.scan_on_push {
            req = req.image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan).build());
        }
        if let Some(m) = settings.tag_mutability {
            req = req.image_tag_mutability(ImageTagMutability::from(m.as_str()));
            for filter in exclusion_filters(settings)? {
                req = req.image_tag_mutability_exclusion_filters(filter);
            }
        }
        if let Some(enc) = settings.encryption {
            let mut e = EncryptionConfiguration::builder().encryption_type(EncryptionType::from(enc.as_str()));
            if let Some(k) = &settings.kms_key {
                e = e.kms_key(k);
            }
            req = req.encryption_configuration(e.build().map_err(|e| EcrError::Settings(e.to_string()))?);
        }
        for (k, v) in &settings.tags {
            req = req.tags(Tag::builder().key(k).value(v).build().map_err(|e| EcrError::Settings(e.to_string()))?);
        }
        let state = match req.send().await {
            Ok(_) => RepositoryState::Created,
            Err(e) if e.code() == Some("RepositoryAlreadyExistsException") => {
                let mutability =
                    self.describe(name).await?.unwrap_or_else(|| TagMutability::of(&EcrSettings::default()));
                return Ok(RepositoryState::Existing { mutability });
            }
            Err(e) => return Err(aws_error(&format!("CreateRepository `{name}`"), e)),
        };
        self.apply_policies(name, policies).await?;
        Ok(state)
    }

    pub async fn apply_policies(&self, name: &str, policies: &Policies) -> Result<(), EcrError> {
        if let Some(text) = &policies.lifecycle {
            self.client
                .put_lifecycle_policy()
                .registry_id(&self.registry_id)
                .repository_name(name)
                .lifecycle_policy_text(text)
                .send()
                .await
                .map_err(|e| aws_error(&format!("PutLifecyclePolicy on `{name}`"), e))?;
        }
        if let Some(text) = &policies.repository {
            self.client
                .set_repository_policy()
                .registry_id(&self.registry_id)
                .repository_name(name)
                .policy_text(text)
                .send()
                .await
                .map_err(|e| aws_error(&format!("SetRepositoryPolicy on `{name}`"), e))?;
        }
        Ok(())
    }

    /// Bring an existing repository to `settings` (--ecr-update-existing).
    pub async fn update(&self, name: &str, settings: &EcrSettings, policies: &Policies) -> Result<(), EcrError> {
        if let Some(scan) = settings.scan_on_push {
            self.client
                .put_image_scanning_configuration()
                .registry_id(&self.registry_id)
                .repository_name(name)
                .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(scan).build())
                .send()
                .await
                .map_err(|e| aws_error(&format!("PutImageScanningConfiguration on `{name}`"), e))?;
        }
        if let Some(m) = settings.tag_mutability {
            let mut req = self
                .client
                .put_image_tag_mutability()
                .registry_id(&self.registry_id)
                .repository_name(name)
                .image_tag_mutability(ImageTagMutability::from(m.as_str()));
            // *_WITH_EXCLUSION needs its filters here as well as at creation.
            for filter in exclusion_filters(settings)? {
                req = req.image_tag_mutability_exclusion_filters(filter);
            }
            req.send().await.map_err(|e| aws_error(&format!("PutImageTagMutability on `{name}`"), e))?;
        }
        self.apply_policies(name, policies).await
    }

    /// Basic credentials for the data plane, from `GetAuthorizationToken` (`base64("AWS:<password>")`).
    pub async fn token(&self) -> Result<Credentials, EcrError> {
        #[allow(deprecated)]
        let out = self
            .client
            .get_authorization_token()
            .registry_ids(&self.registry_id)
            .send()
            .await
            .map_err(|e| aws_error("GetAuthorizationToken", e))?;
        let token = out.authorization_data().first().and_then(|d| d.authorization_token()).ok_or(EcrError::BadToken)?;
        let raw = base64::engine::general_purpose::STANDARD.decode(token).map_err(|_| EcrError::BadToken)?;
        let raw = String::from_utf8(raw).map_err(|_| EcrError::BadToken)?;
        let (user, password) = raw.split_once(':').ok_or(EcrError::BadToken)?;
        Ok(Credentials {
            username: user.to_string(),
            password: password.to_string(),
            origin: "ECR GetAuthorizationToken".into(),
        })
    }
}

/// What the user can do about it.
impl crate::support::hint::Hint for EcrError {
    fn hint(&self) -> Option<String> {
        match self {
            EcrError::Aws { auth: true, .. } => Some(
                "the AWS credentials were refused or have expired: refresh them (aws sso login, a new session token) or check AWS_PROFILE / AWS_ACCESS_KEY_ID; docs/ecr.md lists the IAM permissions the import needs".into(),
            ),
            EcrError::NoCredentials { .. } => Some(
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where an instance or pod role applies; docs/ecr.md lists the sources bundle reads".into(),
            ),
            EcrError::Aws { .. } => Some("docs/ecr.md lists the IAM permissions the import needs and the VPC endpoints it uses".into()),
            EcrError::Token(source) => source.hint(),
            EcrError::Unidentified { what: "account", .. } => Some("pass --ecr-registry-id ACCOUNT (and --ecr-region REGION)".into()),
            EcrError::Unidentified { .. } => Some("pass --ecr-region REGION".into()),
            EcrError::RefusedNames(_) => Some(
                "ECR allows single `.`, `_` or `-` between lowercase letters and digits; --flatten or a different -d prefix may help".into(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod mutability_tests {
    use super::*;

    #[test]
    fn wildcards_match_like_ecr_filters() {
        for (f, t, m) in [
            ("7.*", "7.51.1", true),
            ("7.*", "17.5", false),
            ("*", "", true),
            ("latest", "latest", true),
            ("latest", "latest2", false),
            ("*-rc*", "1.0-rc1", true),
            ("*-rc*", "1.0", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-c-b", false),
            ("*abc", "abcabc", true),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(wildcard_match(f, t), m, "{f} ~ {t}");
        }
    }

    #[test]
    fn exclusions_flip_the_mode_for_matching_tags() {
        let m = |mode: &str| TagMutability { mode: mode.into(), exclusions: vec!["dev-*".into()] };
        assert!(m("IMMUTABLE").is_immutable("dev-1"));
        assert!(!m("MUTABLE").is_immutable("1.0"));
        assert!(m("IMMUTABLE_WITH_EXCLUSION").is_immutable("1.0"));
        assert!(!m("IMMUTABLE_WITH_EXCLUSION").is_immutable("dev-1"));
        assert!(m("MUTABLE_WITH_EXCLUSION").is_immutable("dev-1"));
        assert!(!m("MUTABLE_WITH_EXCLUSION").is_immutable("1.0"));
    }
}
