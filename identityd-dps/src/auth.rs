//! Who may ask for what, by the caller's Unix uid (`SO_PEERCRED`), with upstream's rules:
//!
//! * root, unless listed, and the one `[[principal]]` without `idtype` (aziot-edged) may do
//!   everything;
//! * a principal with `idtype` (a host process) may read its own module identity (`module` or
//!   `local`), the device identity (`device`), and the trust bundle;
//! * anyone else may only read the trust bundle.
//!
//! A denied request is a 401 `authorization error`.

use std::collections::HashMap;

use crate::config::{IdType, Principal};

#[derive(Debug, Clone, PartialEq)]
pub enum Caller {
    LocalRoot,
    Daemon,
    HostProcess(Principal),
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    GetDevice,
    GetModule(&'a str),
    GetAllHubModules,
    CreateModule,
    UpdateModule,
    DeleteModule,
    GetTrustBundle,
    Reprovision,
}

#[derive(Debug, Default)]
pub struct Principals {
    by_uid: HashMap<u32, Principal>,
}

impl Principals {
    pub fn new(principals: &[Principal]) -> Self {
        let mut by_uid: HashMap<u32, Principal> = HashMap::new();
        let mut daemon: Option<&str> = None;
        for p in principals {
            if p.idtype.is_none() {
                if let Some(first) = daemon {
                    log::warn!(
                        "ignoring [[principal]] {:?}: only one principal without idtype is allowed and {first:?} came first",
                        p.name
                    );
                    continue;
                }
                daemon = Some(&p.name);
            }
            if by_uid.contains_key(&p.uid) {
                log::warn!(
                    "ignoring [[principal]] {:?}: uid {} already has a principal",
                    p.name,
                    p.uid
                );
                continue;
            }
            by_uid.insert(p.uid, p.clone());
        }
        Principals { by_uid }
    }

    pub fn caller(&self, uid: u32) -> Caller {
        match self.by_uid.get(&uid) {
            Some(p) if p.idtype.is_some() => Caller::HostProcess(p.clone()),
            Some(_) => Caller::Daemon,
            None if uid == 0 => Caller::LocalRoot,
            None => Caller::Unknown,
        }
    }
}

pub fn authorized(caller: &Caller, op: Operation<'_>) -> bool {
    match caller {
        Caller::LocalRoot | Caller::Daemon => true,
        Caller::HostProcess(p) => match op {
            Operation::GetModule(m) => {
                p.name == m && (p.has(IdType::Module) || p.has(IdType::Local))
            }
            Operation::GetDevice => p.has(IdType::Device),
            Operation::GetTrustBundle => true,
            _ => false,
        },
        Caller::Unknown => op == Operation::GetTrustBundle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(uid: u32, name: &str, idtype: Option<Vec<IdType>>) -> Principal {
        Principal {
            uid,
            name: name.into(),
            idtype,
            localid: None,
        }
    }

    #[test]
    fn upstream_rules() {
        let p = Principals::new(&[
            principal(1000, "aziot-edged", None),
            principal(1001, "edgeAgent", Some(vec![IdType::Module])),
            principal(1002, "devreader", Some(vec![IdType::Device])),
        ]);
        let edged = p.caller(1000);
        assert_eq!(edged, Caller::Daemon);
        assert!(authorized(&edged, Operation::CreateModule));
        assert!(authorized(&p.caller(0), Operation::Reprovision));

        let agent = p.caller(1001);
        assert!(authorized(&agent, Operation::GetModule("edgeAgent")));
        assert!(!authorized(&agent, Operation::GetModule("edgeHub")));
        assert!(!authorized(&agent, Operation::GetDevice));
        assert!(!authorized(&agent, Operation::GetAllHubModules));
        assert!(!authorized(&agent, Operation::Reprovision));
        assert!(authorized(&agent, Operation::GetTrustBundle));

        assert!(authorized(&p.caller(1002), Operation::GetDevice));
        let stranger = p.caller(4242);
        assert_eq!(stranger, Caller::Unknown);
        assert!(!authorized(&stranger, Operation::GetDevice));
        assert!(authorized(&stranger, Operation::GetTrustBundle));
    }

    #[test]
    fn a_principal_for_root_overrides_root_and_only_one_daemon_counts() {
        let p = Principals::new(&[
            principal(0, "rootmod", Some(vec![IdType::Module])),
            principal(5, "first", None),
            principal(6, "second", None),
        ]);
        assert!(!authorized(&p.caller(0), Operation::CreateModule));
        assert_eq!(p.caller(5), Caller::Daemon);
        assert_eq!(p.caller(6), Caller::Unknown);
    }
}
