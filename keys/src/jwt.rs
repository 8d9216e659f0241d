//! ES256 JSON Web Tokens signed with a P-256 [`KeyPair`], and its public key as SPKI PEM: what
//! keyport hands Vault/OpenBao's JWT auth so Vault sees each user log in as themselves.

use base64::Engine as _;

use crate::{KeyError, KeyPair, KeyType};

/// `SubjectPublicKeyInfo { id-ecPublicKey, prime256v1 }` up to the point's BIT STRING.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The compact JWS `header.claims.signature` of `claims` (a JSON object's bytes), header
/// `{"alg":"ES256","typ":"JWT"}`, the signature raw `r || s` as JWA wants.
pub fn sign_es256(pair: &KeyPair, claims: &[u8]) -> Result<String, KeyError> {
    if pair.kind() != KeyType::EcdsaP256 {
        return Err(KeyError::Encoding);
    }
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let input = format!("{}.{}", b64(br#"{"alg":"ES256","typ":"JWT"}"#), b64(claims));
    // The SSH signature blob: string algorithm, string (mpint r, mpint s).
    let blob = pair.sign(input.as_bytes())?;
    let mut rest = skip_string(&blob)?;
    let inner = read_string(&mut rest)?;
    let mut ints = inner;
    let mut raw = Vec::with_capacity(64);
    for _ in 0..2 {
        let int = read_string(&mut ints)?;
        let int = &int[int.iter().take_while(|b| **b == 0).count()..];
        if int.len() > 32 {
            return Err(KeyError::Encoding);
        }
        raw.extend(std::iter::repeat_n(0u8, 32 - int.len()));
        raw.extend_from_slice(int);
    }
    Ok(format!("{input}.{}", b64(&raw)))
}

/// The public half as SPKI PEM (`-----BEGIN PUBLIC KEY-----`), as Vault's
/// `jwt_validation_pubkeys` takes it.
pub fn public_pem(pair: &KeyPair) -> Result<String, KeyError> {
    let point = pair
        .private()
        .public_key()
        .key_data()
        .ecdsa()
        .map(|k| k.as_sec1_bytes().to_vec())
        .ok_or(KeyError::Encoding)?;
    if point.len() != 65 {
        return Err(KeyError::Encoding);
    }
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(&point);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    Ok(format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    ))
}

fn read_string<'a>(data: &mut &'a [u8]) -> Result<&'a [u8], KeyError> {
    let len = data
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or(KeyError::Encoding)?;
    let len = usize::try_from(len).map_err(|_| KeyError::Encoding)?;
    let out = data.get(4..4 + len).ok_or(KeyError::Encoding)?;
    *data = &data[4 + len..];
    Ok(out)
}

fn skip_string(data: &[u8]) -> Result<&[u8], KeyError> {
    let mut rest = data;
    read_string(&mut rest)?;
    Ok(rest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_have_three_parts_and_a_64_byte_signature() {
        let pair = KeyPair::generate(KeyType::EcdsaP256, "jwt").unwrap();
        let token = sign_es256(&pair, br#"{"sub":"alice"}"#).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[2])
            .unwrap();
        assert_eq!(sig.len(), 64);
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        assert_eq!(claims, br#"{"sub":"alice"}"#);
        let pem = public_pem(&pair).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE")
        );
        let ed = KeyPair::generate(KeyType::Ed25519, "x").unwrap();
        assert!(sign_es256(&ed, b"{}").is_err());
    }
}
