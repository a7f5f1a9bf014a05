//! The device identity and where provisioning stands. The status lives in a `watch` channel: API
//! handlers take a snapshot (a short read lock, no I/O under it) and never wait for provisioning,
//! which runs in its own task.

/// The IoT Hub device DPS assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub hub_name: String,
    /// Where to connect: the hub itself (DPS is not supported in nested mode).
    pub gateway_host: String,
    pub device_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No usable device yet; provisioning runs (or waits to retry) in the background.
    Provisioning {
        attempt: u32,
        last_error: Option<String>,
    },
    /// The device is provisioned and its credentials are believed to work.
    Ready { device: Device, generation: u64 },
    /// The device is being registered again (on request or because IoT Hub rejected it).
    Reprovisioning { device: Device, reason: String },
}

impl Status {
    pub fn device(&self) -> Option<&Device> {
        match self {
            Status::Ready { device, .. } => Some(device),
            _ => None,
        }
    }

    /// Why there is no device to serve, for a 503 that tells the caller when to come back.
    pub fn unavailable_reason(&self) -> String {
        match self {
            Status::Ready { .. } => String::new(),
            Status::Provisioning { attempt: 0, .. } => {
                "the device is being provisioned through DPS; retry in a few seconds".into()
            }
            Status::Provisioning { attempt, last_error } => format!(
                "the device is not provisioned yet: DPS provisioning attempt {attempt} failed ({}); \
                 identityd-dps keeps retrying",
                last_error.as_deref().unwrap_or("unknown error")
            ),
            Status::Reprovisioning { reason, .. } => format!(
                "the device is being provisioned again through DPS ({reason}); retry in a few seconds"
            ),
        }
    }
}
