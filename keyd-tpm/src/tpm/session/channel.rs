//! The session channel: the secret-bearing commands, sent on a connection of our own with a
//! salted HMAC session whose HMACs and AES-128-CFB parameter encryption we compute ourselves.
//!
//! Why not ESYS's sessions: ESYS 3.2 (Debian 12) starts a new OpenSSL 3 library context for
//! every hash and HMAC it takes, about a millisecond each, and a session command takes four to
//! six of them; the same work here costs microseconds. ESYS sessions remain the fallback for a
//! TCTI that admits only one connection (a bare `/dev/tpm0`; see `super::BusSession`).
//!
//! With the kernel's resource manager each connection has its own transient objects and
//! sessions, so objects this channel uses (sealed and HMAC keys) are loaded on it, one at a time.

use openssl::bn::{BigNum, BigNumContext};
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey};
use openssl::pkey::PKey;
use openssl::nid::Nid;
use tss_esapi::constants::response_code::Tss2ResponseCode;
use tss_esapi::structures::Public;
use tss_esapi::traits::UnMarshall;
use zeroize::Zeroizing;

use super::crypto::{self, DIGEST};
use super::wire::{self, put_tpm2b, put_u16, put_u32, CommandAuth, Reader, Response, Transport};
use crate::tpm::error::TpmError;

/// A command's outcome: the outer error is ours (a connection that cannot be used, an answer
/// that fails its HMAC check), the inner one the TPM's response code, as tss-esapi reports it.
pub type Answer<T> = Result<Result<T, tss_esapi::Error>, TpmError>;

const CC_EVICT_CONTROL: u32 = 0x120;
const CC_CREATE_PRIMARY: u32 = 0x131;
const CC_ACTIVATE_CREDENTIAL: u32 = 0x147;
const CC_POLICY_SECRET: u32 = 0x151;
const CC_CREATE: u32 = 0x153;
const CC_HMAC: u32 = 0x155;
const CC_IMPORT: u32 = 0x156;
const CC_LOAD: u32 = 0x157;
const CC_UNSEAL: u32 = 0x15E;
const CC_FLUSH_CONTEXT: u32 = 0x165;
const CC_READ_PUBLIC: u32 = 0x173;
const CC_START_AUTH_SESSION: u32 = 0x176;
const CC_GET_RANDOM: u32 = 0x17B;

const SE_HMAC: u8 = 0x00;
const SE_POLICY: u8 = 0x01;
const SE_TRIAL: u8 = 0x03;

const CONTINUE_SESSION: u8 = 0x01;
const DECRYPT: u8 = 0x20;
const ENCRYPT: u8 = 0x40;

/// How one authorization slot of a command is filled.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// Our salted session, authorizing an entity whose authValue is `value` (empty for key
    /// objects and for a session that only encrypts), with parameter encryption as asked.
    Session { value: &'a [u8], decrypt: bool, encrypt: bool },
    /// A password (always empty here: nothing secret).
    Password,
    /// A policy session (its policy is the authorization; it carries no HMAC).
    Policy(u32),
}

impl Auth<'_> {
    fn auth(value: &[u8]) -> Auth<'_> {
        Auth::Session { value, decrypt: false, encrypt: false }
    }
}

struct Session {
    handle: u32,
    key: Zeroizing<Vec<u8>>,
    nonce_tpm: Vec<u8>,
}

struct Loaded {
    id: [u8; DIGEST],
    handle: u32,
    name: Vec<u8>,
}

pub struct Channel {
    wire: Transport,
    session: Option<Session>,
    srk_name: Vec<u8>,
    ek_name: Vec<u8>,
    loaded: Option<Loaded>,
}

/// Name of an object: nameAlg || SHA-256(TPMT_PUBLIC).
pub fn object_name(tpmt_public: &[u8]) -> Vec<u8> {
    let mut name = wire::ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&crypto::sha256(&[tpmt_public]));
    name
}

fn random(n: usize) -> Result<Vec<u8>, TpmError> {
    let mut v = vec![0u8; n];
    openssl::rand::rand_bytes(&mut v).map_err(|e| TpmError::Unexpected(format!("no random bytes: {e}")))?;
    Ok(v)
}

fn tpm_error(rc: u32) -> tss_esapi::Error {
    tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc))
}

fn malformed(command: &str) -> TpmError {
    TpmError::Unexpected(format!("the TPM's answer to {command} is malformed"))
}

impl Channel {
    /// Opens the connection; no session yet (`start_salted` or `start_ephemeral`).
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        Ok(Self { wire: Transport::open(tcti)?, session: None, srk_name: Vec::new(), ek_name: Vec::new(), loaded: None })
    }

    /// The EK and SRK (TPMT_PUBLIC) whose names the commands that use them are HMAC'd over.
    pub fn set_primaries(&mut self, ek_tpmt: &[u8], srk_tpmt: &[u8]) {
        self.ek_name = object_name(ek_tpmt);
        self.srk_name = object_name(srk_tpmt);
    }

    /// Runs one command. `handles` are (handle, name); the names matter only to the HMAC of a
    /// session slot. `response_handles` is how many handles the response carries.
    fn run(
        &mut self,
        what: &'static str,
        code: u32,
        handles: &[(u32, &[u8])],
        mut parameters: Vec<u8>,
        auths: &[Auth<'_>],
        response_handles: usize,
    ) -> Answer<Response> {
        let mut session_slot = None;
        let mut built = Vec::with_capacity(auths.len());
        // A command with password or policy authorization only (a SAS signature's HMAC) needs
        // neither a caller nonce nor a cpHash.
        let with_session = auths.iter().any(|a| matches!(a, Auth::Session { .. }));
        let nonce_caller = if with_session { random(DIGEST)? } else { Vec::new() };
        for (slot, auth) in auths.iter().enumerate() {
            if let Auth::Session { value, decrypt, .. } = *auth {
                let session = self.session.as_ref().ok_or_else(|| TpmError::Unexpected(format!("{what}: no session")))?;
                let key = session_value(&session.key, value);
                if decrypt {
                    crypt_first(true, &key, &nonce_caller, &session.nonce_tpm, &mut parameters)?;
                }
                session_slot = Some(slot);
            }
        }
        let cp_hash = if with_session {
            let mut cp = Vec::with_capacity(4 + parameters.len());
            put_u32(&mut cp, code);
            for (_, name) in handles {
                cp.extend_from_slice(name);
            }
            cp.extend_from_slice(&parameters);
            crypto::sha256(&[&cp])
        } else {
            Default::default()
        };
        for auth in auths {
            built.push(match *auth {
                Auth::Session { value, decrypt, encrypt } => {
                    let session = self.session.as_ref().ok_or_else(|| TpmError::Unexpected(format!("{what}: no session")))?;
                    let attributes = CONTINUE_SESSION | if decrypt { DECRYPT } else { 0 } | if encrypt { ENCRYPT } else { 0 };
                    let key = session_value(&session.key, value);
                    let hmac = crypto::hmac(&key, &[&cp_hash, &nonce_caller, &session.nonce_tpm, &[attributes]]);
                    CommandAuth { handle: session.handle, nonce: nonce_caller.clone(), attributes, hmac: hmac.to_vec() }
                }
                Auth::Password => CommandAuth { handle: wire::RS_PW, nonce: Vec::new(), attributes: CONTINUE_SESSION, hmac: Vec::new() },
                Auth::Policy(handle) => CommandAuth { handle, nonce: random(DIGEST)?, attributes: 0, hmac: Vec::new() },
            });
        }
        let bytes = wire::command(code, &handles.iter().map(|(h, _)| *h).collect::<Vec<_>>(), &built, &parameters);
        let response = match self.wire.execute(&bytes) {
            Ok(r) => r,
            Err(rc) => return Ok(Err(tpm_error(rc))),
        };
        match wire::response_code(&response) {
            Some(0) => {}
            Some(rc) => return Ok(Err(tpm_error(rc))),
            None => return Err(malformed(what)),
        }
        let mut parsed = wire::parse_response(&response, response_handles).ok_or_else(|| malformed(what))?;
        if let Some(slot) = session_slot {
            let Auth::Session { value, encrypt, .. } = auths[slot] else { unreachable!() };
            let answer = parsed.auths.get(slot).ok_or_else(|| malformed(what))?;
            let session = self.session.as_mut().ok_or_else(|| TpmError::Unexpected(format!("{what}: no session")))?;
            let key = session_value(&session.key, value);
            let mut rp = Vec::with_capacity(8 + parsed.parameters.len());
            put_u32(&mut rp, 0);
            put_u32(&mut rp, code);
            rp.extend_from_slice(&parsed.parameters);
            let rp_hash = crypto::sha256(&[&rp]);
            let expected = crypto::hmac(&key, &[&rp_hash, &answer.nonce, &nonce_caller, &[answer.attributes]]);
            if answer.hmac.len() != DIGEST || !openssl::memcmp::eq(&expected, &answer.hmac) {
                return Err(TpmError::Unexpected(format!(
                    "the TPM's answer to {what} fails its session HMAC check: it was altered between the TPM and this process"
                )));
            }
            session.nonce_tpm = answer.nonce.clone();
            if encrypt {
                crypt_first(false, &key, &session.nonce_tpm, &nonce_caller, &mut parsed.parameters)?;
            }
        }
        Ok(Ok(parsed))
    }

    /// Starts the session, salted to `tpm_key` (loaded on this connection) whose public area
    /// is `public`: the salt is encrypted to that public area and no other.
    pub fn start_salted(&mut self, tpm_key: u32, public: &Public) -> Result<(), TpmError> {
        let Public::Ecc { unique, .. } = public else {
            return Err(TpmError::Unexpected("the session salt key is not an ECC key".into()));
        };
        let fail = |e: openssl::error::ErrorStack| TpmError::Unexpected(format!("ECDH for the session salt: {e}"));
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(fail)?;
        let mut bn = BigNumContext::new().map_err(fail)?;
        let (qx, qy) = (unique.x().value(), unique.y().value());
        let (x, y) = (BigNum::from_slice(qx).map_err(fail)?, BigNum::from_slice(qy).map_err(fail)?);
        let peer = PKey::from_ec_key(EcKey::from_public_key_affine_coordinates(&group, &x, &y).map_err(fail)?).map_err(fail)?;
        let ephemeral = EcKey::generate(&group).map_err(fail)?;
        let (mut ex, mut ey) = (BigNum::new().map_err(fail)?, BigNum::new().map_err(fail)?);
        ephemeral.public_key().affine_coordinates(&group, &mut ex, &mut ey, &mut bn).map_err(fail)?;
        let (ex, ey) = (ex.to_vec_padded(32).map_err(fail)?, ey.to_vec_padded(32).map_err(fail)?);
        // Z: the x coordinate of the shared point, as ECDH derives it.
        let ephemeral = PKey::from_ec_key(ephemeral).map_err(fail)?;
        let mut deriver = Deriver::new(&ephemeral).map_err(fail)?;
        deriver.set_peer(&peer).map_err(fail)?;
        let z = Zeroizing::new(deriver.derive_to_vec().map_err(fail)?);
        let mut qx_padded = vec![0u8; 32usize.saturating_sub(qx.len())];
        qx_padded.extend_from_slice(qx);
        let salt = crypto::kdfe(&z, "SECRET", &ex, &qx_padded);
        let mut point = Vec::with_capacity(68);
        put_tpm2b(&mut point, &ex);
        put_tpm2b(&mut point, &ey);
        let nonce_caller = random(DIGEST)?;
        let mut p = Vec::new();
        put_tpm2b(&mut p, &nonce_caller);
        put_tpm2b(&mut p, &point);
        p.push(SE_HMAC);
        put_u16(&mut p, wire::ALG_AES);
        put_u16(&mut p, 128);
        put_u16(&mut p, wire::ALG_CFB);
        put_u16(&mut p, wire::ALG_SHA256);
        let r = self
            .run("TPM2_StartAuthSession (salted)", CC_START_AUTH_SESSION, &[(tpm_key, &[]), (wire::RH_NULL, &[])], p, &[], 1)?
            .map_err(|e| TpmError::Command(crate::tpm::error::CommandError::esapi("TPM2_StartAuthSession (salted)", e)))?;
        let nonce_tpm = Reader::new(&r.parameters).tpm2b().ok_or_else(|| malformed("TPM2_StartAuthSession"))?.to_vec();
        let key = crypto::kdfa(&salt[..], "ATH", &nonce_tpm, &nonce_caller, DIGEST);
        if let Some(old) = self.session.take() {
            let _ = self.flush(old.handle);
        }
        self.session = Some(Session { handle: r.handles[0], key, nonce_tpm });
        Ok(())
    }

    /// Starts the session salted to an ephemeral ECC primary in the null hierarchy (before the
    /// SRK exists), whose public area can only come from the TPM's answer.
    pub fn start_ephemeral(&mut self, template: &[u8]) -> Result<(), TpmError> {
        let (handle, public) = self
            .create_primary(wire::RH_NULL, None, template)?
            .map_err(|e| TpmError::Command(crate::tpm::error::CommandError::esapi("TPM2_CreatePrimary (null hierarchy, session salt key)", e)))?;
        let public = Public::unmarshall(&public).map_err(|_| malformed("TPM2_CreatePrimary"));
        let started = public.and_then(|p| self.start_salted(handle, &p));
        let _ = self.flush(handle);
        started
    }

    /// Flushes the session, if any.
    pub fn close(&mut self) {
        self.make_room();
        if let Some(s) = self.session.take() {
            let _ = self.flush(s.handle);
        }
    }

    pub fn flush(&mut self, handle: u32) -> Answer<()> {
        let mut p = Vec::new();
        put_u32(&mut p, handle);
        Ok(self.run("TPM2_FlushContext", CC_FLUSH_CONTEXT, &[], p, &[], 0)?.map(drop))
    }

    /// How many TPM object slots this connection holds (0 or 1).
    pub fn objects_loaded(&self) -> usize {
        usize::from(self.loaded.is_some())
    }

    /// Flushes the cached loaded object (the TPM has few slots).
    pub fn make_room(&mut self) {
        if let Some(l) = self.loaded.take() {
            let _ = self.flush(l.handle);
        }
    }

    /// Loads an object under the SRK (empty password: nothing secret); returns handle and
    /// name, the name checked against the public area we hold.
    pub fn load(&mut self, parent: u32, tpmt_public: &[u8], private: &[u8]) -> Answer<(u32, Vec<u8>)> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, private);
        put_tpm2b(&mut p, tpmt_public);
        let r = match self.run("TPM2_Load", CC_LOAD, &[(parent, &[])], p, &[Auth::Password], 1)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let name = object_name(tpmt_public);
        if Reader::new(&r.parameters).tpm2b() != Some(&name[..]) {
            let _ = self.flush(r.handles[0]);
            return Err(TpmError::Unexpected("TPM2_Load returned a name that is not the loaded public area's".into()));
        }
        Ok(Ok((r.handles[0], name)))
    }

    /// Runs `op` with an SRK-wrapped object loaded on this connection (cached, one at a time);
    /// a cached handle that fails is loaded again and `op` retried once.
    pub fn with_loaded<T>(
        &mut self,
        tpmt_public: &[u8],
        private: &[u8],
        mut op: impl FnMut(&mut Self, u32, &[u8]) -> Answer<T>,
    ) -> Answer<T> {
        let id = crypto::sha256(&[private]);
        if let Some(l) = self.loaded.take() {
            if l.id == id {
                match op(self, l.handle, &l.name) {
                    Ok(Ok(v)) => {
                        self.loaded = Some(l);
                        return Ok(Ok(v));
                    }
                    Ok(Err(_)) => {}
                    Err(e) => {
                        let _ = self.flush(l.handle);
                        return Err(e);
                    }
                }
            }
            let _ = self.flush(l.handle);
        }
        let (handle, name) = match self.load(aziot_tpm_common::SRK_HANDLE, tpmt_public, private)? {
            Ok(loaded) => loaded,
            Err(e) => return Ok(Err(e)),
        };
        match op(self, handle, &name) {
            Err(e) => {
                let _ = self.flush(handle);
                Err(e)
            }
            result => {
                self.loaded = Some(Loaded { id, handle, name });
                result
            }
        }
    }

    /// TPM2_Create under the SRK; `data` (key bytes) travels encrypted. Returns (TPMT_PUBLIC,
    /// private).
    pub fn create(&mut self, tpmt_public: &[u8], data: Option<&[u8]>) -> Answer<(Vec<u8>, Vec<u8>)> {
        let mut sensitive = Zeroizing::new(Vec::new());
        put_tpm2b(&mut sensitive, &[]);
        put_tpm2b(&mut sensitive, data.unwrap_or_default());
        let mut p = Vec::new();
        put_tpm2b(&mut p, &sensitive);
        put_tpm2b(&mut p, tpmt_public);
        put_tpm2b(&mut p, &[]);
        put_u32(&mut p, 0);
        let auth = match data {
            Some(_) => Auth::Session { value: &[], decrypt: true, encrypt: false },
            None => Auth::Password,
        };
        let srk_name = self.srk_name.clone();
        let r = match self.run("TPM2_Create", CC_CREATE, &[(aziot_tpm_common::SRK_HANDLE, &srk_name)], p, &[auth], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let mut rd = Reader::new(&r.parameters);
        let private = rd.tpm2b().ok_or_else(|| malformed("TPM2_Create"))?.to_vec();
        let public = rd.tpm2b().ok_or_else(|| malformed("TPM2_Create"))?.to_vec();
        Ok(Ok((public, private)))
    }

    /// TPM2_Import under the SRK, its first parameter (the inner wrapper key) encrypted.
    pub fn import(
        &mut self,
        encryption_key: &[u8],
        tpmt_public: &[u8],
        duplicate: &[u8],
        in_sym_seed: &[u8],
        inner_wrapped: bool,
    ) -> Answer<Vec<u8>> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, encryption_key);
        put_tpm2b(&mut p, tpmt_public);
        put_tpm2b(&mut p, duplicate);
        put_tpm2b(&mut p, in_sym_seed);
        if inner_wrapped {
            put_u16(&mut p, wire::ALG_AES);
            put_u16(&mut p, 128);
            put_u16(&mut p, wire::ALG_CFB);
        } else {
            put_u16(&mut p, wire::ALG_NULL);
        }
        let srk_name = self.srk_name.clone();
        let auth = Auth::Session { value: &[], decrypt: true, encrypt: false };
        let r = match self.run("TPM2_Import", CC_IMPORT, &[(aziot_tpm_common::SRK_HANDLE, &srk_name)], p, &[auth], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Reader::new(&r.parameters).tpm2b().ok_or_else(|| malformed("TPM2_Import"))?.to_vec()))
    }

    /// TPM2_Unseal, its answer encrypted.
    pub fn unseal(&mut self, handle: u32, name: &[u8]) -> Answer<Zeroizing<Vec<u8>>> {
        let auth = Auth::Session { value: &[], decrypt: false, encrypt: true };
        let r = match self.run("TPM2_Unseal", CC_UNSEAL, &[(handle, name)], Vec::new(), &[auth], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(first_secret(r, "TPM2_Unseal")?))
    }

    /// TPM2_HMAC (SHA-256), its answer encrypted.
    pub fn hmac(&mut self, handle: u32, name: &[u8], data: &[u8]) -> Answer<Zeroizing<Vec<u8>>> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, data);
        put_u16(&mut p, wire::ALG_SHA256);
        let auth = Auth::Session { value: &[], decrypt: false, encrypt: true };
        let r = match self.run("TPM2_HMAC", CC_HMAC, &[(handle, name)], p, &[auth], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(first_secret(r, "TPM2_HMAC")?))
    }

    /// TPM2_HMAC (SHA-256) with the object at `handle`, whose authValue is empty, by password:
    /// for the auth key, whose answer (a SAS signature) is no secret; no name needed.
    pub fn hmac_password(&mut self, handle: u32, data: &[u8]) -> Answer<Vec<u8>> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, data);
        put_u16(&mut p, wire::ALG_SHA256);
        let r = match self.run("TPM2_HMAC", CC_HMAC, &[(handle, &[])], p, &[Auth::Password], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Reader::new(&r.parameters).tpm2b().ok_or_else(|| malformed("TPM2_HMAC"))?.to_vec()))
    }

    /// TPM2_GetRandom, its answer encrypted (the session authorizes nothing here).
    pub fn get_random(&mut self, n: u16) -> Answer<Zeroizing<Vec<u8>>> {
        let mut p = Vec::new();
        put_u16(&mut p, n);
        let auth = Auth::Session { value: &[], decrypt: false, encrypt: true };
        let r = match self.run("TPM2_GetRandom", CC_GET_RANDOM, &[], p, &[auth], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(first_secret(r, "TPM2_GetRandom")?))
    }

    /// TPM2_ActivateCredential with the SRK as the activated object and the EK as the key,
    /// the EK authorized by PolicySecret(endorsement) whose HMAC `endorsement` keys; returns
    /// the credential, which crosses the bus encrypted. Commands that fail are named in `step`.
    pub fn activate_credential(
        &mut self,
        endorsement: &[u8],
        credential_blob: &[u8],
        secret: &[u8],
        step: &mut &'static str,
    ) -> Answer<Zeroizing<Vec<u8>>> {
        *step = "TPM2_StartAuthSession (policy)";
        let policy = match self.start_policy(SE_POLICY)? {
            Ok(handle) => handle,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.activate_with(policy, endorsement, credential_blob, secret, step);
        if !matches!(result, Ok(Ok(_))) {
            // A policy session that authorized a command is gone; one that did not is flushed.
            let _ = self.flush(policy);
        }
        result
    }

    /// TPM2_PolicySecret(`hierarchy`) in a trial policy session, authorized by the hierarchy's
    /// password through the session: tests the password and changes nothing.
    pub fn policy_secret_trial(&mut self, hierarchy: u32, password: &[u8]) -> Answer<()> {
        let trial = match self.start_policy(SE_TRIAL)? {
            Ok(handle) => handle,
            Err(e) => return Ok(Err(e)),
        };
        let result = self.policy_secret(hierarchy, password, trial);
        let _ = self.flush(trial);
        result
    }

    /// An unsalted, unbound policy (or trial) session: its policy is what authorizes, so it
    /// needs no session key.
    fn start_policy(&mut self, session_type: u8) -> Answer<u32> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, &random(DIGEST)?);
        put_tpm2b(&mut p, &[]);
        p.push(session_type);
        put_u16(&mut p, wire::ALG_NULL);
        put_u16(&mut p, wire::ALG_SHA256);
        let handles = [(wire::RH_NULL, &[][..]), (wire::RH_NULL, &[][..])];
        Ok(self.run("TPM2_StartAuthSession (policy)", CC_START_AUTH_SESSION, &handles, p, &[], 1)?.map(|r| r.handles[0]))
    }

    fn policy_secret(&mut self, hierarchy: u32, password: &[u8], policy: u32) -> Answer<()> {
        let mut p = Vec::new();
        put_tpm2b(&mut p, &[]); // nonceTPM
        put_tpm2b(&mut p, &[]); // cpHashA
        put_tpm2b(&mut p, &[]); // policyRef
        put_u32(&mut p, 0); // expiration
        let handles = [(hierarchy, &hierarchy.to_be_bytes()[..]), (policy, &policy.to_be_bytes()[..])];
        Ok(self.run("TPM2_PolicySecret", CC_POLICY_SECRET, &handles, p, &[Auth::auth(password)], 0)?.map(drop))
    }

    fn activate_with(
        &mut self,
        policy: u32,
        endorsement: &[u8],
        credential_blob: &[u8],
        secret: &[u8],
        step: &mut &'static str,
    ) -> Answer<Zeroizing<Vec<u8>>> {
        *step = "TPM2_PolicySecret";
        if let Err(e) = self.policy_secret(wire::RH_ENDORSEMENT, endorsement, policy)? {
            return Ok(Err(e));
        }
        *step = "TPM2_ActivateCredential";
        let mut p = Vec::new();
        put_tpm2b(&mut p, credential_blob);
        put_tpm2b(&mut p, secret);
        let (srk_name, ek_name) = (self.srk_name.clone(), self.ek_name.clone());
        let handles = [(aziot_tpm_common::SRK_HANDLE, &srk_name[..]), (aziot_tpm_common::EK_HANDLE, &ek_name[..])];
        let auths = [Auth::Session { value: &[], decrypt: false, encrypt: true }, Auth::Policy(policy)];
        let r = match self.run(step, CC_ACTIVATE_CREDENTIAL, &handles, p, &auths, 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(first_secret(r, step)?))
    }

    /// TPM2_EvictControl authorized by the owner: persists `object` at `persistent`, or removes
    /// the persistent object when `object` is `persistent` itself.
    pub fn evict_control(&mut self, owner: &[u8], object: u32, object_name: &[u8], persistent: u32) -> Answer<()> {
        let mut p = Vec::new();
        put_u32(&mut p, persistent);
        let handles = [(wire::RH_OWNER, &wire::RH_OWNER.to_be_bytes()[..]), (object, object_name)];
        Ok(self.run("TPM2_EvictControl", CC_EVICT_CONTROL, &handles, p, &[Auth::auth(owner)], 0)?.map(drop))
    }

    /// TPM2_CreatePrimary in `hierarchy`, authorized by its password through the session
    /// (by an empty password for the null hierarchy); returns the handle and TPMT_PUBLIC.
    pub fn create_primary(&mut self, hierarchy: u32, password: Option<&[u8]>, tpmt_public: &[u8]) -> Answer<(u32, Vec<u8>)> {
        let mut p = Vec::new();
        put_u16(&mut p, 4); // inSensitive: empty userAuth and data
        put_u32(&mut p, 0);
        put_tpm2b(&mut p, tpmt_public);
        put_tpm2b(&mut p, &[]);
        put_u32(&mut p, 0);
        let auth = match password {
            Some(value) => Auth::auth(value),
            None => Auth::Password,
        };
        let name = hierarchy.to_be_bytes();
        let r = match self.run("TPM2_CreatePrimary", CC_CREATE_PRIMARY, &[(hierarchy, &name)], p, &[auth], 1)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        let public = Reader::new(&r.parameters).tpm2b().ok_or_else(|| malformed("TPM2_CreatePrimary"))?.to_vec();
        Ok(Ok((r.handles[0], public)))
    }

    /// The TPMT_PUBLIC of a loaded or persistent object, as the TPM answers.
    pub fn read_public(&mut self, handle: u32) -> Answer<Vec<u8>> {
        let r = match self.run("TPM2_ReadPublic", CC_READ_PUBLIC, &[(handle, &[])], Vec::new(), &[], 0)? {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(Reader::new(&r.parameters).tpm2b().ok_or_else(|| malformed("TPM2_ReadPublic"))?.to_vec()))
    }
}

impl Drop for Channel {
    /// Frees the TPM's slots (without a resource manager they outlive the connection).
    fn drop(&mut self) {
        self.close();
    }
}

/// The first TPM2B of a response whose parameters are secret, the parameters zeroized after.
fn first_secret(r: Response, what: &str) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let parameters = Zeroizing::new(r.parameters);
    let value = Reader::new(&parameters).tpm2b().ok_or_else(|| malformed(what))?;
    Ok(Zeroizing::new(value.to_vec()))
}

/// sessionKey || authValue, the HMAC key of an unbound session (Part 1 §19.6.8); trailing zero
/// bytes of an authValue are dropped, as the TPM drops them.
fn session_value(key: &[u8], value: &[u8]) -> Zeroizing<Vec<u8>> {
    let trimmed = &value[..value.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)];
    let mut v = Zeroizing::new(Vec::with_capacity(key.len() + trimmed.len()));
    v.extend_from_slice(key);
    v.extend_from_slice(trimmed);
    v
}

/// Encrypts (command) or decrypts (response) the buffer of the TPM2B the parameters start with:
/// AES-128-CFB keyed by KDFa(sessionValue, "CFB", nonceNewer, nonceOlder), key then IV.
fn crypt_first(encrypt: bool, key: &[u8], newer: &[u8], older: &[u8], parameters: &mut [u8]) -> Result<(), TpmError> {
    let size = usize::from(u16::from_be_bytes([
        *parameters.first().ok_or_else(|| malformed("an encrypted parameter"))?,
        *parameters.get(1).ok_or_else(|| malformed("an encrypted parameter"))?,
    ]));
    let buffer = parameters.get_mut(2..2 + size).ok_or_else(|| malformed("an encrypted parameter"))?;
    let kiv = crypto::kdfa(key, "CFB", newer, older, 32);
    crypto::cfb(encrypt, &kiv[..16], &kiv[16..], buffer)
}
