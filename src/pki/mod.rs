//! Device identity and the cryptography around it: the device certificate authority (`ca`),
//! SCEP messages (`scep`), `Mdm-Signature` verification (`signature`), profile signing
//! (`profile_signing`), sealing secrets at rest (`seal`: PINs, unlock tokens in stored
//! commands), and the DER/CMS plumbing they share (`der`, `cms`). Nothing here knows about HTTP
//! routes or the store; the server decides what to issue and whom to trust, with these as its
//! tools.

pub mod ca;
pub mod cms;
pub mod der;
pub mod scep;
pub mod seal;
pub mod signature;
pub mod signer_key;

mod profile_signing;
pub use profile_signing::{unwrap_signed_profile, ProfileSigner};

pub use ca::{CertificateProblem, DeviceCa, DeviceCertificate};
