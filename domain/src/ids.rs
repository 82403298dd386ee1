use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// Identity of a customer aggregate.
    CustomerId
);
id_type!(
    /// Identity of a technician aggregate.
    TechnicianId
);
id_type!(
    /// Identity of a ticket aggregate.
    TicketId
);
id_type!(
    /// Identity of a device (product) aggregate.
    DeviceId
);
id_type!(
    /// Identity of a spare part aggregate.
    PartId
);
id_type!(
    /// Identity of a note on a ticket.
    NoteId
);
id_type!(
    /// Identity of a payment on a ticket.
    PaymentId
);
id_type!(
    /// Identity of a user account.
    UserId
);
