//! Bounds on a GraphQL document, checked before the schema validates or runs it, in time
//! linear in the document's size: async-graphql's own depth and complexity checks expand every
//! fragment spread anew (a few hundred bytes of nested spreads expand to billions of fields, a
//! synchronous computation no timeout interrupts), so the expanded size is counted here first,
//! each fragment once (memoized), and a document over the limits never reaches them.
//!
//! Introspection (`__schema`, `__type`) is exempt from the depth limit (the standard
//! introspection query of graphql-js nests `ofType` nine levels deep) but not from the others.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Longest query text accepted (variables travel apart, in the body's limit).
pub const MAX_QUERY_BYTES: usize = 32 * 1024;
/// Deepest nesting of braces, brackets and parentheses in the text, checked before parsing
/// (the parser recurses once per level).
pub const MAX_NESTING: usize = 64;
/// Deepest selection accepted, introspection aside.
pub const MAX_DEPTH: usize = 12;
/// Most fields a document may select once its fragments are expanded (aliases included).
pub const MAX_FIELDS: usize = 1_000;

/// Why a document is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    TooLong,
    TooNested,
    TooDeep,
    TooManyFields,
    FragmentCycle(String),
    UnknownFragment(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLong => write!(f, "the query is longer than {MAX_QUERY_BYTES} bytes"),
            Refusal::TooNested => write!(f, "the query nests deeper than {MAX_NESTING} levels"),
            Refusal::TooDeep => write!(f, "Query is nested too deep (more than {MAX_DEPTH})"),
            Refusal::TooManyFields => write!(
                f,
                "the query selects more than {MAX_FIELDS} fields once its fragments are expanded"
            ),
            Refusal::FragmentCycle(name) => write!(f, "fragment {name} spreads itself"),
            Refusal::UnknownFragment(name) => write!(f, "unknown fragment {name}"),
        }
    }
}

/// Checks the text before it is parsed: its length and how deep its brackets nest (outside
/// strings and comments).
pub fn check_text(query: &str) -> Result<(), Refusal> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Refusal::TooLong);
    }
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = query.chars();
    while let Some(c) = chars.next() {
        // A block string (`"""…"""`, where a lone `"` is text) ends only at `"""`.
        if c == '"' && chars.as_str().starts_with("\"\"") {
            chars.nth(1);
            skip_block_string(&mut chars);
            continue;
        }
        match c {
            '{' | '[' | '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            '}' | ']' | ')' => depth = depth.saturating_sub(1),
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if deepest > MAX_NESTING {
        return Err(Refusal::TooNested);
    }
    Ok(())
}

/// Moves `chars` past the `"""` that closes a block string (`\"""` does not close it).
fn skip_block_string(chars: &mut std::str::Chars<'_>) {
    loop {
        let rest = chars.as_str();
        if rest.is_empty() {
            return;
        }
        if rest.starts_with("\\\"\"\"") {
            chars.nth(3);
        } else if rest.starts_with("\"\"\"") {
            chars.nth(2);
            return;
        } else {
            chars.next();
        }
    }
}

/// What a selection set costs: fields once expanded, and depth (introspection not counted).
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    fields: usize,
    depth: usize,
}

enum Memo {
    InProgress,
    Done(Cost),
}

/// Checks a parsed document: every operation (validation looks at all of them) and every
/// fragment, each fragment's cost computed once.
pub fn check_document(doc: &ExecutableDocument) -> Result<(), Refusal> {
    let mut memo: HashMap<&str, Memo> = HashMap::new();
    let mut total = 0usize;
    for (_, op) in doc.operations.iter() {
        let cost = selection_cost(doc, &op.node.selection_set.node, &mut memo)?;
        if cost.depth > MAX_DEPTH {
            return Err(Refusal::TooDeep);
        }
        total = total.saturating_add(cost.fields);
    }
    for name in doc.fragments.keys() {
        fragment_cost(doc, name.as_str(), &mut memo)?;
    }
    if total > MAX_FIELDS {
        return Err(Refusal::TooManyFields);
    }
    Ok(())
}

fn fragment_cost<'a>(
    doc: &'a ExecutableDocument,
    name: &'a str,
    memo: &mut HashMap<&'a str, Memo>,
) -> Result<Cost, Refusal> {
    match memo.get(name) {
        Some(Memo::Done(cost)) => return Ok(*cost),
        Some(Memo::InProgress) => return Err(Refusal::FragmentCycle(name.to_owned())),
        None => {}
    }
    let Some((key, fragment)) = doc.fragments.get_key_value(name) else {
        return Err(Refusal::UnknownFragment(name.to_owned()));
    };
    memo.insert(key.as_str(), Memo::InProgress);
    let cost = selection_cost(doc, &fragment.node.selection_set.node, memo)?;
    memo.insert(key.as_str(), Memo::Done(cost));
    Ok(cost)
}

fn selection_cost<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    memo: &mut HashMap<&'a str, Memo>,
) -> Result<Cost, Refusal> {
    let mut cost = Cost::default();
    for item in &set.items {
        let inner = match &item.node {
            Selection::Field(field) => {
                let field = &field.node;
                let below = selection_cost(doc, &field.selection_set.node, memo)?;
                let introspection = matches!(field.name.node.as_str(), "__schema" | "__type");
                Cost {
                    fields: below.fields.saturating_add(1),
                    depth: if introspection { 1 } else { below.depth + 1 },
                }
            }
            Selection::FragmentSpread(spread) => {
                fragment_cost(doc, spread.node.fragment_name.node.as_str(), memo)?
            }
            Selection::InlineFragment(inline) => {
                selection_cost(doc, &inline.node.selection_set.node, memo)?
            }
        };
        cost.fields = cost.fields.saturating_add(inner.fields);
        cost.depth = cost.depth.max(inner.depth);
        // Stop early: a set over the limit need not be counted to the end. (Depth is judged
        // per operation only: a fragment's depth does not count below introspection.)
        if cost.fields > MAX_FIELDS {
            return Err(Refusal::TooManyFields);
        }
    }
    Ok(cost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    fn check(query: &str) -> Result<(), Refusal> {
        check_text(query)?;
        check_document(&parse_query(query).expect("parses"))
    }

    #[test]
    fn nested_fragment_spreads_are_counted_once_each_and_refused_fast() {
        // Each fragment spreads the one below it ten times: 10^20 fields once expanded.
        let mut query = String::from("query { ...F0 }\n");
        for i in 0..20 {
            let spreads = vec![format!("...F{}", i + 1); 10].join(" ");
            query.push_str(&format!("fragment F{i} on QueryRoot {{ {spreads} }}\n"));
        }
        query.push_str("fragment F20 on QueryRoot { projectionStatus { lag } }\n");
        let started = std::time::Instant::now();
        assert_eq!(check(&query), Err(Refusal::TooManyFields));
        assert!(started.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn many_aliases_are_refused() {
        let aliases: String = (0..600)
            .map(|i| format!("a{i}: tickets(first: 1) {{ totalCount }} "))
            .collect();
        assert_eq!(
            check(&format!("{{ {aliases} }}")),
            Err(Refusal::TooManyFields)
        );
    }

    #[test]
    fn cycles_depth_and_nesting_are_refused() {
        assert!(matches!(
            check("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }"),
            Err(Refusal::FragmentCycle(_))
        ));
        let deep = format!("{{ {} x {} }}", "a {".repeat(13), "}".repeat(13));
        assert_eq!(check(&deep), Err(Refusal::TooDeep));
        let nested = format!("{{ {} }}", "[".repeat(100));
        assert_eq!(check_text(&nested), Err(Refusal::TooNested));
        // Brackets inside strings and comments do not count.
        let quoted = format!(
            "{{ a(s: \"{}\") # {}\n }}",
            "[".repeat(100),
            "{".repeat(100)
        );
        assert_eq!(check_text(&quoted), Ok(()));
        // A lone quote inside a block string does not hide the brackets after it.
        let block = format!(
            "{{ a(s: \"\"\" \" \\\"\"\" \"\"\", t: {}) }}",
            "[".repeat(100)
        );
        assert_eq!(check_text(&block), Err(Refusal::TooNested));
        let closed = "{ a(s: \"\"\" [[[[ \"\"\") }";
        assert_eq!(check_text(closed), Ok(()));
        assert_eq!(
            check_text(&"x".repeat(MAX_QUERY_BYTES + 1)),
            Err(Refusal::TooLong)
        );
    }

    #[test]
    fn introspection_is_exempt_from_depth_only() {
        let deep_type = format!(
            "{{ __type(name: \"Ticket\") {{ {} name {} }} }}",
            "ofType {".repeat(15),
            "}".repeat(15)
        );
        assert_eq!(check(&deep_type), Ok(()));
        let fields: String = (0..1_100).map(|i| format!("n{i}: name ")).collect();
        assert_eq!(
            check(&format!("{{ __schema {{ types {{ {fields} }} }} }}")),
            Err(Refusal::TooManyFields)
        );
    }
}
