//! Tab completion in the shell: meta-commands, SQL keywords, table names,
//! and the column names of the tables the statement mentions.
//!
//! The names are read from the session's catalog before each prompt
//! ([`Names::read`]), so a table created a statement ago completes; the
//! matching itself ([`complete`]) is a pure function of the text before the
//! cursor, the lines of the statement typed so far, and those names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context as LineContext, Helper};
use volley_client::Context;

/// Meta-commands, as `\?` lists them.
const META_COMMANDS: &[&str] = &[
    "\\?",
    "\\q",
    "\\d",
    "\\timing",
    "\\format",
    "\\max-rows",
    "\\x",
    "\\o",
    "\\i",
];

/// SQL keywords worth completing: the ones people type, not every reserved
/// word of the dialect.
const KEYWORDS: &[&str] = &[
    "ALL",
    "ANALYZE",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COPY",
    "COUNT",
    "CREATE",
    "CROSS",
    "DATE",
    "DELETE",
    "DESC",
    "DESCRIBE",
    "DISTINCT",
    "DROP",
    "ELSE",
    "END",
    "EXCEPT",
    "EXISTS",
    "EXPLAIN",
    "EXTERNAL",
    "EXTRACT",
    "FALSE",
    "FIRST",
    "FROM",
    "FULL",
    "GROUP",
    "HAVING",
    "IN",
    "INNER",
    "INSERT",
    "INTERSECT",
    "INTERVAL",
    "INTO",
    "IS",
    "JOIN",
    "LAST",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LOCATION",
    "NOT",
    "NULL",
    "NULLS",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "PARTITION",
    "RIGHT",
    "SELECT",
    "SET",
    "SHOW",
    "STORED",
    "SUM",
    "TABLE",
    "TABLES",
    "THEN",
    "TO",
    "TRUE",
    "UNION",
    "USING",
    "VALUES",
    "VERBOSE",
    "VIEW",
    "WHEN",
    "WHERE",
    "WITH",
];

/// Keywords after which a table name comes.
const BEFORE_TABLE: &[&str] = &["FROM", "JOIN", "INTO", "TABLE", "DESCRIBE", "UPDATE", "\\D"];

/// The tables of the session and their columns.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    /// Table name (as typed in SQL) to its column names.
    tables: BTreeMap<String, Vec<String>>,
}

impl Names {
    /// Reads every table of every catalog and schema but
    /// `information_schema`.
    pub(crate) async fn read(ctx: &Context) -> Names {
        let mut tables = BTreeMap::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                if schema_name == "information_schema" {
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                for table in schema.table_names() {
                    let columns = match schema.table(&table).await {
                        Ok(Some(provider)) => provider
                            .schema()
                            .fields()
                            .iter()
                            .map(|f| f.name().clone())
                            .collect(),
                        _ => Vec::new(),
                    };
                    let name = if schema_name == "public" {
                        table
                    } else {
                        format!("{schema_name}.{table}")
                    };
                    tables.insert(name, columns);
                }
            }
        }
        Names { tables }
    }

    #[cfg(test)]
    fn of(tables: &[(&str, &[&str])]) -> Names {
        Names {
            tables: tables
                .iter()
                .map(|(t, cs)| (t.to_string(), cs.iter().map(|c| c.to_string()).collect()))
                .collect(),
        }
    }
}

/// Whether `c` may be part of a name being completed.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.' || c == '\\' || c == '-'
}

/// Completions of the word before the cursor at byte `pos` of `line`,
/// given the earlier lines of the same statement: the byte position where
/// that word starts and the candidates. Columns come from the tables named
/// anywhere in the statement, after the cursor too.
pub(crate) fn complete(
    line: &str,
    pos: usize,
    statement: &str,
    names: &Names,
) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_word_char(*c))
        .last()
        .map_or(before.len(), |(i, _)| i);
    let word = &before[start..];
    if word.starts_with('\\') {
        if statement.trim().is_empty() && before[..start].trim().is_empty() {
            return (start, matching(META_COMMANDS.iter().copied(), word, false));
        }
        return (start, Vec::new());
    }
    let previous = before[..start]
        .split(|c: char| !is_word_char(c))
        .rfind(|w| !w.is_empty())
        .or_else(|| {
            statement
                .split(|c: char| !is_word_char(c))
                .rfind(|w| !w.is_empty())
        })
        .map(str::to_uppercase)
        .unwrap_or_default();
    let tables = names.tables.keys().map(String::as_str);
    if BEFORE_TABLE.contains(&previous.as_str()) {
        return (start, matching(tables, word, false));
    }
    if word.is_empty() {
        return (start, Vec::new());
    }
    // Columns of the tables this statement mentions, then tables, then
    // keywords.
    let text = format!("{statement} {line}").to_lowercase();
    let mentioned: Vec<&str> = text
        .split(|c: char| !is_word_char(c))
        .filter(|w| names.tables.contains_key(*w))
        .collect();
    let columns = mentioned
        .iter()
        .filter_map(|t| names.tables.get(*t))
        .flatten()
        .map(String::as_str);
    let mut candidates = matching(columns, word, false);
    candidates.extend(matching(tables, word, false));
    candidates.extend(matching(KEYWORDS.iter().copied(), word, true));
    candidates.dedup();
    (start, candidates)
}

/// The names that start with `word`, ignoring case; keywords keep the case
/// the user types in.
fn matching<'a>(names: impl Iterator<Item = &'a str>, word: &str, keyword: bool) -> Vec<String> {
    let lower = word.to_lowercase();
    let typed_lower = word.chars().any(char::is_lowercase);
    let mut found: Vec<String> = names
        .filter(|n| n.to_lowercase().starts_with(&lower))
        .map(|n| {
            if keyword && typed_lower {
                n.to_lowercase()
            } else {
                n.to_string()
            }
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

/// The shell's rustyline helper: completion only, no hints or colours.
#[derive(Debug, Default, Clone)]
pub(crate) struct ShellHelper {
    names: Arc<Mutex<Names>>,
    /// The lines of the statement typed so far (before the current line).
    statement: Arc<Mutex<String>>,
}

impl ShellHelper {
    pub(crate) fn set_names(&self, names: Names) {
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }

    pub(crate) fn set_statement(&self, statement: &str) {
        *self.statement.lock().unwrap_or_else(|p| p.into_inner()) = statement.to_string();
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &LineContext<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let statement = self.statement.lock().unwrap_or_else(|p| p.into_inner());
        let (start, found) = complete(line, pos, &statement, &names);
        Ok((
            start,
            found
                .into_iter()
                .map(|name| Pair {
                    display: name.clone(),
                    replacement: name,
                })
                .collect(),
        ))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes at the end of `line`.
    fn at_end(line: &str, statement: &str, names: &Names) -> (usize, Vec<String>) {
        complete(line, line.len(), statement, names)
    }

    fn names() -> Names {
        Names::of(&[
            ("lineitem", &["l_orderkey", "l_quantity", "l_shipdate"]),
            ("orders", &["o_orderkey", "o_orderdate"]),
            ("nation", &["n_name"]),
        ])
    }

    #[test]
    fn a_table_name_completes_after_from_and_join() {
        assert_eq!(
            at_end("SELECT * FROM line", "", &names()),
            (14, vec!["lineitem".to_string()])
        );
        assert_eq!(
            at_end("select * from lineitem join ", "", &names()).1,
            ["lineitem", "nation", "orders"]
        );
    }

    #[test]
    fn columns_complete_only_for_the_tables_the_statement_mentions() {
        let (start, found) = at_end("SELECT l_q", "", &names());
        assert_eq!((start, found), (7, Vec::<String>::new()));
        let (_, found) = at_end("WHERE l_", "SELECT count(*) FROM lineitem\n", &names());
        assert_eq!(found, ["l_orderkey", "l_quantity", "l_shipdate"]);
        let line = "SELECT o_ FROM orders";
        let (_, found) = complete(line, "SELECT o_".len(), "", &names());
        assert_eq!(
            found,
            ["o_orderdate", "o_orderkey"],
            "a table after the cursor counts"
        );
        let (_, found) = at_end("SELECT n FROM nation, orders WHERE n", "", &names());
        assert_eq!(found[..2], ["n_name", "nation"]);
        assert!(found.contains(&"null".to_string()), "{found:?}");
    }

    #[test]
    fn keywords_complete_in_the_case_they_are_typed() {
        assert_eq!(at_end("SEL", "", &names()).1, ["SELECT"]);
        assert_eq!(at_end("sel", "", &names()).1, ["select"]);
        assert_eq!(at_end("select * fr", "", &names()).1, ["from"]);
    }

    #[test]
    fn meta_commands_complete_at_the_start_of_a_statement_only() {
        assert_eq!(at_end("\\ti", "", &names()).1, ["\\timing"]);
        assert_eq!(at_end("\\", "", &names()).1.len(), META_COMMANDS.len());
        assert!(at_end("\\ti", "SELECT 1\n", &names()).1.is_empty());
        assert_eq!(at_end("\\d ord", "", &names()).1, ["orders"]);
    }
}
