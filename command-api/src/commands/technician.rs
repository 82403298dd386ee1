//! Technicians: onboarded, deactivated.

use domain::{Email, Technician, TechnicianCommand, TechnicianId};
use uuid::Uuid;

use super::fields::{expected, new_id, optional_text, text, MAX_LONG_TEXT, MAX_NAME};
use super::{command, Access};

command!(
    /// Onboards a technician. `technicianId` is generated when absent. The e-mail must be unique.
    OnboardTechnician {
        technician_id: Option<Uuid>,
        #[schema(min_length = 1, max_length = 200, example = "Ravi Kumar")]
        name: String,
        #[schema(min_length = 1, example = "ravi@service.example")]
        email: String,
    }
    summary: "Onboard a technician",
    access: Access::Admins,
    run(self, cx) {
        let command = domain::OnboardTechnician {
            technician_id: TechnicianId::from_uuid(new_id(self.technician_id)),
            name: text("name", &self.name, MAX_NAME)?,
            email: Email::parse("email", &self.email)?,
        };
        let (id, email) = (command.technician_id, command.email.clone());
        cx.service
            .register_with_email::<Technician>(
                id,
                TechnicianCommand::Onboard(command),
                &email,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);

command!(
    /// Deactivates a technician: no new assignments from then on.
    DeactivateTechnician {
        technician_id: Uuid,
        #[schema(max_length = 5000)]
        reason: Option<String>,
    }
    summary: "Deactivate a technician",
    access: Access::Admins,
    run(self, cx) {
        let command = TechnicianCommand::Deactivate {
            reason: optional_text("reason", self.reason.as_deref(), MAX_LONG_TEXT)?,
        };
        cx.service
            .send::<Technician>(
                self.technician_id,
                command,
                expected(self.expected_version)?,
                cx.meta,
            )
            .await
    }
);
