use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::event_payload;
use crate::{Aggregate, DomainError, Email, TechnicianId, Text};

#[derive(Debug, Clone)]
pub struct OnboardTechnician {
    pub technician_id: TechnicianId,
    pub name: Text,
    pub email: Email,
}

#[derive(Debug, Clone)]
pub enum TechnicianCommand {
    Onboard(OnboardTechnician),
    Deactivate { reason: Option<Text> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all_fields = "camelCase")]
pub enum TechnicianEvent {
    TechnicianOnboarded {
        technician_id: TechnicianId,
        name: Text,
        email: Email,
        onboarded_at: DateTime<Utc>,
    },
    TechnicianDeactivated {
        technician_id: TechnicianId,
        reason: Option<Text>,
        deactivated_at: DateTime<Utc>,
    },
}
event_payload!(TechnicianEvent {
    TechnicianOnboarded,
    TechnicianDeactivated
});

/// A technician. `None` until onboarded.
#[derive(Debug, Clone, Default)]
pub struct Technician(Option<TechnicianState>);

#[derive(Debug, Clone, PartialEq)]
pub struct TechnicianState {
    pub id: TechnicianId,
    pub name: Text,
    pub active: bool,
}

impl Technician {
    pub fn state(&self) -> Option<&TechnicianState> {
        self.0.as_ref()
    }
}

impl Aggregate for Technician {
    type Command = TechnicianCommand;
    type Event = TechnicianEvent;
    const STREAM_PREFIX: &'static str = "technician";

    fn decide(
        &self,
        command: TechnicianCommand,
        now: DateTime<Utc>,
    ) -> Result<Vec<TechnicianEvent>, DomainError> {
        match (command, &self.0) {
            (TechnicianCommand::Onboard(_), Some(_)) => {
                Err(DomainError::TechnicianAlreadyOnboarded)
            }
            (TechnicianCommand::Onboard(c), None) => {
                Ok(vec![TechnicianEvent::TechnicianOnboarded {
                    technician_id: c.technician_id,
                    name: c.name,
                    email: c.email,
                    onboarded_at: now,
                }])
            }
            (TechnicianCommand::Deactivate { .. }, None) => {
                Err(DomainError::NotFound { kind: "technician" })
            }
            (TechnicianCommand::Deactivate { .. }, Some(t)) if !t.active => {
                Err(DomainError::TechnicianAlreadyInactive)
            }
            (TechnicianCommand::Deactivate { reason }, Some(t)) => {
                Ok(vec![TechnicianEvent::TechnicianDeactivated {
                    technician_id: t.id,
                    reason,
                    deactivated_at: now,
                }])
            }
        }
    }

    fn evolve(self, event: &TechnicianEvent) -> Self {
        match (event, self.0) {
            (
                TechnicianEvent::TechnicianOnboarded {
                    technician_id,
                    name,
                    ..
                },
                _,
            ) => Technician(Some(TechnicianState {
                id: *technician_id,
                name: name.clone(),
                active: true,
            })),
            (TechnicianEvent::TechnicianDeactivated { .. }, state) => {
                Technician(state.map(|s| TechnicianState { active: false, ..s }))
            }
        }
    }
}
