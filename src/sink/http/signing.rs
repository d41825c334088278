//! Standard Webhooks signing: the secrets (`WEBHOOK_SECRET`) and the `webhook-signature` of a
//! request. No I/O.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Secrets separated by spaces or commas, each `whsec_` + base64 (the prefix may be left out,
/// as the reference libraries allow; padding is optional).
pub(super) fn parse_secrets(text: &str) -> Result<Vec<Hmac<Sha256>>, String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut keys = Vec::new();
    for (n, secret) in text.split([' ', ',']).filter(|s| !s.is_empty()).enumerate() {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = LENIENT.decode(encoded).map_err(|e| {
            format!(
                "secret {} is not whsec_ followed by base64 ({e}); secrets are separated by spaces or commas",
                n + 1
            )
        })?;
        if key.is_empty() {
            return Err(format!("secret {} is empty", n + 1));
        }
        let key = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|e| format!("secret {} is not usable as an HMAC key: {e}", n + 1))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("holds no secret; leave it unset to send unsigned requests".into());
    }
    Ok(keys)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per key, space-separated.
pub(super) fn signature(keys: &[Hmac<Sha256>], id: &str, timestamp: u64, body: &[u8]) -> String {
    let timestamp = timestamp.to_string();
    let signatures: Vec<String> = keys
        .iter()
        .map(|key| {
            let mut mac = key.clone();
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect();
    signatures.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_reference_library_does() {
        // The signature the reference library (Python standardwebhooks 1.1.0) computes for this.
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        let signature = signature(
            &keys,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn two_secrets_give_two_signatures() {
        let keys = parse_secrets("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, whsec_c2Vjb25k")
            .expect("secrets");
        let signature = signature(&keys, "id", 1, b"{}");
        assert_eq!(signature.split(' ').count(), 2);
        assert!(signature.split(' ').all(|s| s.starts_with("v1,")));
    }
}
