//! Device identity: the device certificate authority, SCEP message handling, `Mdm-Signature`
//! verification, and the DER/CMS plumbing they share. Nothing here knows about HTTP routes or
//! the store; the server decides what to issue and whom to trust, with these as its tools.

pub mod ca;
pub mod cms;
pub mod der;
pub mod scep;
pub mod seal;
pub mod signature;

mod profile_signing;
pub use profile_signing::{unwrap_signed_profile, ProfileSigner};

pub use ca::{CertificateProblem, DeviceCa, DeviceCertificate};
