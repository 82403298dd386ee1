//! Who a user id is: their name and role, folded from the user's own stream by the domain's
//! code, wherever the read side keeps only an id (a note's author, an event's actor). Read
//! through a DataLoader, so a page of notes or audit entries reads each user once.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::SimpleObject;
use domain::{Aggregate, User};
use stream_store::{read_full_stream, EventStore, StreamId};
use uuid::Uuid;

/// A user as others see them: a customer sees staff this way, never by id.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct Person {
    pub name: String,
    /// `admin`, `technician`, `customer` or `auditor`.
    pub role: String,
}

pub(crate) struct UserLoader(pub(crate) Arc<dyn EventStore>);

impl Loader<Uuid> for UserLoader {
    type Value = Person;
    type Error = Arc<stream_store::StoreError>;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Person>, Self::Error> {
        let mut people = HashMap::with_capacity(ids.len());
        for id in ids {
            let stream = StreamId::for_aggregate(User::STREAM_PREFIX, id);
            let events = read_full_stream(&*self.0, &stream)
                .await
                .map_err(Arc::new)?;
            let user: User = match crate::history::fold(&events) {
                Ok(user) => user,
                // An event this build cannot read: the id stays without a name.
                Err(_) => continue,
            };
            if let Some(state) = user.state() {
                people.insert(
                    *id,
                    Person {
                        name: state.name.as_str().to_owned(),
                        role: state.grant.role.label().to_owned(),
                    },
                );
            }
        }
        Ok(people)
    }
}

/// The person behind an actor id (`None`: not a user's id, or no such user).
pub(crate) async fn person(
    ctx: &async_graphql::Context<'_>,
    actor_id: &str,
) -> async_graphql::Result<Option<Person>> {
    let Ok(id) = Uuid::parse_str(actor_id) else {
        return Ok(None);
    };
    let lookups = ctx.data::<crate::Lookups>()?;
    lookups
        .users
        .load_one(id)
        .await
        .map_err(|e| crate::error::gql(crate::QueryError::Internal(Box::new(e))))
}
