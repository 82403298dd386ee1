//! Who a user id is: their name and role, from the `users` read model, wherever the read side
//! keeps only an id (a note's author, an event's actor). Read through a DataLoader, so a page
//! of notes or audit entries reads the users once.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::Loader;
use async_graphql::SimpleObject;
use sqlx::PgPool;
use uuid::Uuid;

/// A user as others see them: a customer sees staff this way, never by id.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct Person {
    pub name: String,
    /// `admin`, `technician`, `customer` or `auditor`.
    pub role: String,
}

pub(crate) struct UserLoader(pub(crate) PgPool);

impl Loader<Uuid> for UserLoader {
    type Value = Person;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, Person>, Self::Error> {
        let rows = sqlx::query!(
            "SELECT user_id, name, role FROM users WHERE user_id = ANY($1)",
            ids
        )
        .fetch_all(&self.0)
        .await
        .map_err(Arc::new)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let person = Person {
                    name: r.name,
                    role: r.role,
                };
                (r.user_id, person)
            })
            .collect())
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
