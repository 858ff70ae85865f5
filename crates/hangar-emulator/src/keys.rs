//! Test-only key fixtures. The PEM files in `fixtures/` were generated for this project and are
//! compiled in with `include_str!`, so tests can sign GitHub App JWTs the emulator accepts (the
//! seed App's public key is [`APP_PUBLIC_KEY`]) and check that other keys are refused. Never use
//! them for anything real: they are public.

/// The seed App's RSA private key in PKCS#1 PEM (`-----BEGIN RSA PRIVATE KEY-----`), the form
/// GitHub hands out.
pub const APP_PRIVATE_KEY_PKCS1: &str = include_str!("../fixtures/app-key-pkcs1.pem");

/// The same key as [`APP_PRIVATE_KEY_PKCS1`], in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub const APP_PRIVATE_KEY_PKCS8: &str = include_str!("../fixtures/app-key-pkcs8.pem");

/// The public half of [`APP_PRIVATE_KEY_PKCS1`] (SubjectPublicKeyInfo PEM), registered for the
/// seed App.
pub const APP_PUBLIC_KEY: &str = include_str!("../fixtures/app-key.pub.pem");

/// A different RSA private key (PKCS#1): JWTs signed with it must be rejected by the seed App.
pub const OTHER_PRIVATE_KEY_PKCS1: &str = include_str!("../fixtures/other-key-pkcs1.pem");

/// An EC (P-256) private key: not RSA, so it cannot sign an RS256 App JWT.
pub const EC_PRIVATE_KEY: &str = include_str!("../fixtures/ec-key.pem");
