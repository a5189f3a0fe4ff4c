//! CMS SignedData as SCEP and `Mdm-Signature` use it: a read-only view of the parts openssl
//! does not expose (signer identifiers, signed attributes, embedded certificates), and a builder
//! for SignedData with signed attributes (SCEP CertRep) and certs-only SignedData.
//!
//! Signature checks go through openssl (`CmsContentInfo::verify`), except the common DER form
//! of a signer with signed attributes, checked here over those attributes as received with the
//! signer's key (`signer_key`).

use super::der::{self, DerError, DerResult, Tlv};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKeyRef, Private};
use openssl::x509::X509Ref;

pub const ID_DATA: &str = "1.2.840.113549.1.7.1";
pub const ID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
pub const ID_ENVELOPED_DATA: &str = "1.2.840.113549.1.7.3";
pub const ATTR_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
pub const ATTR_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
pub const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

/// A digest algorithm both ends understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha512,
}

impl Digest {
    pub fn oid(self) -> &'static str {
        match self {
            Digest::Sha1 => "1.3.14.3.2.26",
            Digest::Sha256 => "2.16.840.1.101.3.4.2.1",
            Digest::Sha512 => "2.16.840.1.101.3.4.2.3",
        }
    }

    pub fn from_oid(encoded: &[u8]) -> Option<Self> {
        [Digest::Sha1, Digest::Sha256, Digest::Sha512]
            .into_iter()
            .find(|d| der::oid_is(encoded, d.oid()))
    }

    pub fn message_digest(self) -> MessageDigest {
        match self {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha512 => MessageDigest::sha512(),
        }
    }
}

/// One signer of a SignedData.
#[derive(Debug, Clone)]
pub struct SignerView {
    /// The `serialNumber` INTEGER content of the issuerAndSerialNumber signer identifier.
    pub serial: Vec<u8>,
    /// Encoded issuer `Name`.
    pub issuer: Vec<u8>,
    /// The digest algorithm's encoded OID.
    pub digest_oid: Vec<u8>,
    /// Signed attributes: (encoded OID, encoded first value).
    pub signed_attributes: Vec<(Vec<u8>, Vec<u8>)>,
    /// The signed attributes exactly as received, re-tagged as the SET the signature covers.
    pub signed_attributes_set: Option<Vec<u8>>,
    pub signature: Vec<u8>,
}

impl SignerView {
    /// The first value of the signed attribute with this dotted OID.
    pub fn attribute(&self, dotted: &str) -> Option<&[u8]> {
        self.signed_attributes
            .iter()
            .find(|(oid, _)| der::oid_is(oid, dotted))
            .map(|(_, value)| value.as_slice())
    }
}

/// The parts of a DER SignedData ContentInfo this crate reads.
#[derive(Debug, Clone)]
pub struct SignedDataView {
    pub content_type: Vec<u8>,
    pub content: Option<Vec<u8>>,
    pub certificates: Vec<Vec<u8>>,
    pub signers: Vec<SignerView>,
}

impl SignedDataView {
    /// Parses a DER `ContentInfo` holding SignedData.
    pub fn parse(content_info: &[u8]) -> DerResult<Self> {
        let outer = der::parse_single(content_info, "ContentInfo")?;
        let mut ci = outer.reader();
        let kind = ci.expect(der::OID, "ContentInfo.contentType")?;
        if !der::oid_is(kind.raw, ID_SIGNED_DATA) {
            return Err(DerError("ContentInfo is not SignedData".into()));
        }
        let explicit = ci.expect(der::context(0), "ContentInfo.content")?;
        let signed = der::parse_single(explicit.content, "SignedData")?;
        let mut sd = signed.reader();
        sd.expect(der::INTEGER, "SignedData.version")?;
        sd.expect(der::SET, "SignedData.digestAlgorithms")?;
        let encap = sd.expect(der::SEQUENCE, "SignedData.encapContentInfo")?;
        let mut encap_reader = encap.reader();
        let content_type = encap_reader.expect(der::OID, "eContentType")?.raw.to_vec();
        let content = match encap_reader.optional(der::context(0))? {
            Some(explicit) => {
                let octets = der::parse_single(explicit.content, "eContent")?;
                Some(octets.content.to_vec())
            }
            None => None,
        };
        let mut certificates = Vec::new();
        if let Some(certs) = sd.optional(der::context(0))? {
            let mut reader = certs.reader();
            while !reader.is_empty() {
                certificates.push(reader.read()?.raw.to_vec());
            }
        }
        sd.optional(der::context(1))?; // CRLs: not used.
        let infos = sd.expect(der::SET, "SignedData.signerInfos")?;
        let mut signers = Vec::new();
        let mut reader = infos.reader();
        while !reader.is_empty() {
            signers.push(parse_signer(reader.expect(der::SEQUENCE, "SignerInfo")?)?);
        }
        Ok(Self {
            content_type,
            content,
            certificates,
            signers,
        })
    }

    /// The embedded certificate whose serial number and issuer match the first signer.
    pub fn signer_certificate(&self) -> Option<&[u8]> {
        let signer = self.signers.first()?;
        self.certificates.iter().map(Vec::as_slice).find(|cert| {
            certificate_issuer_and_serial(cert)
                .is_ok_and(|(issuer, serial)| issuer == signer.issuer && serial == signer.serial)
        })
    }
}

impl SignedDataView {
    /// Verifies the first signer over the signed attributes *as received* and their
    /// messageDigest over `content`. Some signers (Go's pkcs7) sign attributes in an order that
    /// is not DER's, which openssl rejects because it re-encodes them sorted; the bytes as sent
    /// are what the signature covers.
    /// Whether the first signer signed attributes (the usual form, and the only one the fast
    /// path checks).
    pub fn has_signed_attributes(&self) -> bool {
        self.signers
            .first()
            .is_some_and(|s| s.signed_attributes_set.is_some())
    }

    pub fn verify_first_signer_as_received(
        &self,
        content: &[u8],
        signer_key: &super::signer_key::SignerKey,
    ) -> bool {
        let Some(info) = self.signers.first() else {
            return false;
        };
        let Some(attributes) = info.signed_attributes_set.as_deref() else {
            return false;
        };
        let Some(digest) = Digest::from_oid(&info.digest_oid) else {
            return false;
        };
        let expected = match openssl::hash::hash(digest.message_digest(), content) {
            Ok(h) => der::octet_string(&h),
            Err(_) => return false,
        };
        if info.attribute(ATTR_MESSAGE_DIGEST) != Some(expected.as_slice()) {
            return false;
        }
        signer_key.verify(digest, attributes, &info.signature)
    }
}

fn parse_signer(info: Tlv<'_>) -> DerResult<SignerView> {
    let mut r = info.reader();
    r.expect(der::INTEGER, "SignerInfo.version")?;
    let sid = r.read()?;
    if sid.tag != der::SEQUENCE {
        return Err(DerError(
            "SignerInfo identifies its signer by key identifier; issuerAndSerialNumber expected"
                .into(),
        ));
    }
    let mut sid_reader = sid.reader();
    let issuer = sid_reader.expect(der::SEQUENCE, "issuer")?.raw.to_vec();
    let serial = sid_reader
        .expect(der::INTEGER, "serialNumber")?
        .content
        .to_vec();
    let digest = r.expect(der::SEQUENCE, "SignerInfo.digestAlgorithm")?;
    let digest_oid = digest.reader().expect(der::OID, "digest OID")?.raw.to_vec();
    let mut signed_attributes = Vec::new();
    let mut signed_attributes_set = None;
    if let Some(attrs) = r.optional(der::context(0))? {
        let mut as_set = attrs.raw.to_vec();
        as_set[0] = der::SET;
        signed_attributes_set = Some(as_set);
        let mut reader = attrs.reader();
        while !reader.is_empty() {
            let attr = reader.expect(der::SEQUENCE, "Attribute")?;
            let mut a = attr.reader();
            let oid = a.expect(der::OID, "Attribute.type")?.raw.to_vec();
            let values = a.expect(der::SET, "Attribute.values")?;
            let first = values.reader().read()?.raw.to_vec();
            signed_attributes.push((oid, first));
        }
    }
    r.expect(der::SEQUENCE, "SignerInfo.signatureAlgorithm")?;
    let signature = r
        .expect(der::OCTET_STRING, "SignerInfo.signature")?
        .content
        .to_vec();
    Ok(SignerView {
        serial,
        issuer,
        digest_oid,
        signed_attributes,
        signed_attributes_set,
        signature,
    })
}

/// (encoded issuer Name, serial INTEGER content) of a DER certificate.
pub fn certificate_issuer_and_serial(cert: &[u8]) -> DerResult<(Vec<u8>, Vec<u8>)> {
    let outer = der::parse_single(cert, "Certificate")?;
    let tbs = outer.reader().expect(der::SEQUENCE, "tbsCertificate")?;
    let mut r = tbs.reader();
    r.optional(der::context(0))?; // version
    let serial = r.expect(der::INTEGER, "serialNumber")?.content.to_vec();
    r.expect(der::SEQUENCE, "signature")?;
    let issuer = r.expect(der::SEQUENCE, "issuer")?.raw.to_vec();
    Ok((issuer, serial))
}

/// The algorithm identifier (encoded OID) of EnvelopedData's content encryption.
pub fn enveloped_cipher_oid(content_info: &[u8]) -> DerResult<Vec<u8>> {
    let outer = der::parse_single(content_info, "ContentInfo")?;
    let mut ci = outer.reader();
    let kind = ci.expect(der::OID, "ContentInfo.contentType")?;
    if !der::oid_is(kind.raw, ID_ENVELOPED_DATA) {
        return Err(DerError("ContentInfo is not EnvelopedData".into()));
    }
    let explicit = ci.expect(der::context(0), "ContentInfo.content")?;
    let enveloped = der::parse_single(explicit.content, "EnvelopedData")?;
    let mut r = enveloped.reader();
    r.expect(der::INTEGER, "EnvelopedData.version")?;
    r.optional(der::context(0))?; // originatorInfo
    r.expect(der::SET, "recipientInfos")?;
    let eci = r.expect(der::SEQUENCE, "encryptedContentInfo")?;
    let mut e = eci.reader();
    e.expect(der::OID, "contentType")?;
    let alg = e.expect(der::SEQUENCE, "contentEncryptionAlgorithm")?;
    Ok(alg.reader().expect(der::OID, "cipher OID")?.raw.to_vec())
}

/// One signed attribute: (dotted OID, encoded value).
pub type Attribute = (&'static str, Vec<u8>);

/// Builds a DER SignedData ContentInfo over `content` (absent for SCEP failures), signed by
/// `signer` with the given extra signed attributes; contentType and messageDigest are added.
pub fn build_signed_data(
    content: Option<&[u8]>,
    signer: &X509Ref,
    key: &PKeyRef<Private>,
    digest: Digest,
    extra_attributes: Vec<Attribute>,
) -> Result<Vec<u8>, BuildError> {
    let hashed = openssl::hash::hash(digest.message_digest(), content.unwrap_or_default())?;
    let mut attributes = vec![
        attribute(ATTR_CONTENT_TYPE, der::oid(ID_DATA)),
        attribute(ATTR_MESSAGE_DIGEST, der::octet_string(&hashed)),
    ];
    attributes.extend(
        extra_attributes
            .into_iter()
            .map(|(oid, value)| attribute(oid, value)),
    );
    let signed_attrs = der::set_of(attributes);
    let mut signer_tool = openssl::sign::Signer::new(digest.message_digest(), key)?;
    signer_tool.update(&signed_attrs)?;
    let signature = signer_tool.sign_to_vec()?;

    let signer_der = signer.to_der()?;
    let (issuer, serial) = certificate_issuer_and_serial(&signer_der)?;
    // In the SignerInfo the SET is re-tagged [0] IMPLICIT; the signature covers the SET form.
    let mut implicit_attrs = signed_attrs.clone();
    implicit_attrs[0] = der::context(0);
    let signer_info = der::sequence(&[
        &der::integer(1),
        &der::sequence(&[&issuer, &der::tlv(der::INTEGER, &serial)]),
        &der::algorithm(digest.oid()),
        &implicit_attrs,
        &der::algorithm(RSA_ENCRYPTION),
        &der::octet_string(&signature),
    ]);
    let encap = match content {
        Some(bytes) => der::sequence(&[
            &der::oid(ID_DATA),
            &der::constructed(der::context(0), &[&der::octet_string(bytes)]),
        ]),
        None => der::sequence(&[&der::oid(ID_DATA)]),
    };
    let signed_data = der::sequence(&[
        &der::integer(1),
        &der::set_of(vec![der::algorithm(digest.oid())]),
        &encap,
        &der::constructed(der::context(0), &[&signer_der]),
        &der::set_of(vec![signer_info]),
    ]);
    Ok(content_info(ID_SIGNED_DATA, &signed_data))
}

/// A "degenerate" certs-only SignedData: how SCEP returns issued certificates.
pub fn certs_only(certificates: &[&[u8]]) -> Vec<u8> {
    let signed_data = der::sequence(&[
        &der::integer(1),
        &der::set_of(Vec::new()),
        &der::sequence(&[&der::oid(ID_DATA)]),
        &der::constructed(der::context(0), certificates),
        &der::set_of(Vec::new()),
    ]);
    content_info(ID_SIGNED_DATA, &signed_data)
}

fn content_info(kind: &str, content: &[u8]) -> Vec<u8> {
    der::sequence(&[
        &der::oid(kind),
        &der::constructed(der::context(0), &[content]),
    ])
}

fn attribute(dotted: &str, value: Vec<u8>) -> Vec<u8> {
    der::sequence(&[&der::oid(dotted), &der::set_of(vec![value])])
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    #[error("{0}")]
    Der(#[from] DerError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::cms::{CMSOptions, CmsContentInfo};

    fn self_signed() -> (openssl::x509::X509, openssl::pkey::PKey<Private>) {
        let key =
            openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "signer").unwrap();
        let name = name.build();
        let mut b = openssl::x509::X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_serial_number(
            &openssl::bn::BigNum::from_u32(4242)
                .unwrap()
                .to_asn1_integer()
                .unwrap(),
        )
        .unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (b.build(), key)
    }

    #[test]
    fn built_signed_data_verifies_with_openssl_and_reads_back() {
        let (cert, key) = self_signed();
        let built = build_signed_data(
            Some(b"hello"),
            &cert,
            &key,
            Digest::Sha256,
            vec![("2.16.840.1.113733.1.9.2", der::printable_string("3"))],
        )
        .unwrap();
        let mut cms = CmsContentInfo::from_der(&built).unwrap();
        let mut out = Vec::new();
        cms.verify(
            None,
            None,
            None,
            Some(&mut out),
            CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY,
        )
        .expect("openssl accepts our SignedData");
        assert_eq!(out, b"hello");

        let view = SignedDataView::parse(&built).unwrap();
        assert_eq!(view.content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(view.signer_certificate(), Some(&cert.to_der().unwrap()[..]));
        assert_eq!(
            view.signers[0].attribute("2.16.840.1.113733.1.9.2"),
            Some(&der::printable_string("3")[..])
        );
    }

    #[test]
    fn a_changed_byte_breaks_the_signature() {
        let (cert, key) = self_signed();
        let mut built =
            build_signed_data(Some(b"hello"), &cert, &key, Digest::Sha256, vec![]).unwrap();
        let pos = built.windows(5).position(|w| w == b"hello").unwrap();
        built[pos] = b'j';
        let mut cms = CmsContentInfo::from_der(&built).unwrap();
        assert!(cms
            .verify(
                None,
                None,
                None,
                None,
                CMSOptions::NO_SIGNER_CERT_VERIFY | CMSOptions::BINARY
            )
            .is_err());
    }

    #[test]
    fn certs_only_is_readable_by_openssl() {
        let (cert, _) = self_signed();
        let der_cert = cert.to_der().unwrap();
        let p7 = certs_only(&[&der_cert]);
        let parsed = openssl::pkcs7::Pkcs7::from_der(&p7).unwrap();
        let certs = parsed.signed().unwrap().certificates().unwrap();
        assert_eq!(certs.len(), 1);
    }
}
