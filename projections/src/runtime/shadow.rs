//! The shadow tables a rebuild loads: empty copies of the live ones, with the indexes and keys
//! that are cheaper to build once the rows are in.

use sqlx::PgPool;

use super::{AppendedTable, ProjectionError, Projector};

/// What a rebuild builds once its tables are loaded.
pub(super) struct Deferred {
    /// `CREATE INDEX` statements (including the unique indexes of keys built after the load).
    pub(super) indexes: Vec<String>,
    /// `ALTER TABLE … ADD CONSTRAINT` statements of keys built after the load, run after the
    /// indexes (a key becomes a constraint on the index already built).
    pub(super) constraints: Vec<String>,
}

/// Creates `shadow` with an empty copy of each table: columns, defaults, checks, keys and
/// unique constraints, under the live names; an appended table, or any table of a projector
/// that inserts each key once, gets no key or unique index. Returns what to build once the
/// tables are loaded: the other indexes, with the live names and definitions, and the keys
/// left out.
pub(super) async fn create_shadow(
    pool: &PgPool,
    shadow: &str,
    projector: &dyn Projector,
    appended: &[AppendedTable],
) -> Result<Deferred, ProjectionError> {
    let mut conn = pool.acquire().await?;
    // Identifiers cannot be bound; these come from our own constants.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&mut *conn)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {shadow}"))
        .execute(&mut *conn)
        .await?;
    let mut deferred = Deferred {
        indexes: Vec::new(),
        constraints: Vec::new(),
    };
    for table in projector.tables() {
        let keys_after_load =
            appended.iter().any(|t| t.table == *table) || projector.inserts_each_key_once();
        sqlx::query(&format!(
            "CREATE TABLE {shadow}.{table} (LIKE public.{table} INCLUDING DEFAULTS
                 INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE INCLUDING COMMENTS)
             WITH (autovacuum_enabled = false)"
        ))
        .execute(&mut *conn)
        .await?;
        let live = format!("public.{table}");
        let on_live = format!(" ON {live} USING ");
        let on_shadow = format!(" ON {shadow}.{table} USING ");
        let in_shadow = |definition: String| {
            if definition.matches(&on_live).count() == 1 {
                Ok(definition.replacen(&on_live, &on_shadow, 1))
            } else {
                Err(ProjectionError::Schema(definition))
            }
        };
        let constraints = sqlx::query!(
            r#"SELECT conname AS "name!", pg_get_constraintdef(oid) AS "definition!",
                      contype::text AS "kind!", pg_get_indexdef(conindid) AS "index!"
               FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype IN ('p', 'u', 'x')
               ORDER BY conname"#,
            live
        )
        .fetch_all(&mut *conn)
        .await?;
        for c in constraints {
            let add = format!(
                "ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{}\" {}",
                c.name, c.definition
            );
            if !keys_after_load {
                sqlx::query(&add).execute(&mut *conn).await?;
            } else if c.kind == "x" {
                deferred.constraints.push(add);
            } else {
                // The constraint's index under the constraint's name, then the constraint on it.
                deferred.indexes.push(in_shadow(c.index)?);
                let kind = if c.kind == "p" {
                    "PRIMARY KEY"
                } else {
                    "UNIQUE"
                };
                deferred.constraints.push(format!(
                    "ALTER TABLE {shadow}.{table} ADD CONSTRAINT \"{0}\" {kind} USING INDEX \"{0}\"",
                    c.name
                ));
            }
        }
        let indexes = sqlx::query!(
            r#"SELECT pg_get_indexdef(i.indexrelid) AS "definition!", i.indisunique AS "unique!"
               FROM pg_index i
               WHERE i.indrelid = $1::text::regclass
                 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
               ORDER BY i.indexrelid"#,
            live
        )
        .fetch_all(&mut *conn)
        .await?;
        for index in indexes {
            let definition = in_shadow(index.definition)?;
            if index.unique && !keys_after_load {
                // Upserts may infer their conflict target from it.
                sqlx::query(&definition).execute(&mut *conn).await?;
            } else {
                deferred.indexes.push(definition);
            }
        }
    }
    Ok(deferred)
}
