//! Recognising ECR registries by name, in every AWS partition, and validating repository names the way ECR
//! will, before any call is made.

use std::sync::OnceLock;

/// An ECR registry: the account (registry id) and region its hostname names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    pub registry_id: String,
    pub region: String,
}

/// The pattern amazon-ecr-credential-helper uses, for every partition.
fn host_pattern() -> &'static regex_lite::Regex {
    static RE: OnceLock<regex_lite::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex_lite::Regex::new(
            r"^(\d{12})\.dkr[.-]ecr(-fips)?\.([a-z0-9-]+)\.(amazonaws\.com(\.cn)?|amazonaws\.eu|on\.aws|on\.amazonwebservices\.com\.cn|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$",
        )
        .expect("valid pattern")
    })
}

/// The ECR registry a hostname names, if it is one (a port, if any, is ignored).
pub fn detect(host: &str) -> Option<EcrRegistry> {
    let host = host.split(':').next().unwrap_or(host);
    let caps = host_pattern().captures(host)?;
    Some(EcrRegistry { registry_id: caps[1].to_string(), region: caps[3].to_string() })
}

/// ECR's rule for repository names: 2–256 characters of
/// `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`. Stricter than the distribution grammar
/// (`a__b` and `a--b` are valid references but not valid ECR repositories).
pub fn validate_repository_name(name: &str) -> Result<(), String> {
    static RE: OnceLock<regex_lite::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex_lite::Regex::new(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
            .expect("valid pattern")
    });
    if name.len() < 2 || name.len() > 256 {
        return Err(format!("`{name}` must be 2 to 256 characters long"));
    }
    if !re.is_match(name) {
        return Err(format!(
            "`{name}` is not a valid ECR repository name (lowercase letters and digits, single `.`, `_` or `-` between them, `/` between components)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_every_partition() {
        for (host, id, region) in [
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "123456789012", "eu-west-1"),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "123456789012", "us-gov-west-1"),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "123456789012", "cn-north-1"),
            ("123456789012.dkr-ecr.eu-central-1.on.aws", "123456789012", "eu-central-1"),
            ("123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov:443", "123456789012", "us-iso-east-1"),
        ] {
            assert_eq!(detect(host), Some(EcrRegistry { registry_id: id.into(), region: region.into() }), "{host}");
        }
        for host in
            ["quay.io", "12345.dkr.ecr.eu-west-1.amazonaws.com", "123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.io"]
        {
            assert_eq!(detect(host), None, "{host}");
        }
    }

    #[test]
    fn repository_names_follow_ecr_rules() {
        assert!(validate_repository_name("stackstate/wait").is_ok());
        assert!(validate_repository_name("mirror/library/nginx").is_ok());
        for bad in ["a", "team/my__app", "team/a--b", "Team/app", "a/", "/a"] {
            assert!(validate_repository_name(bad).is_err(), "{bad}");
        }
    }
}
