//! SQL scripts as statements with line numbers, so that a client and the
//! scheduler number a script's statements alike in their error messages.

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::volley_internal;

/// One statement of a script and the line it starts on (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The line the statement starts on, from 1.
    pub line: u32,
    /// The statement's text.
    pub sql: String,
}

/// Splits a script at top-level semicolons, keeping each statement's line.
pub fn split_statements(script: &str) -> Result<Vec<Statement>, DataFusionError> {
    let tokens = Tokenizer::new(&GenericDialect {}, script)
        .tokenize_with_location()
        .map_err(|e| DataFusionError::Plan(format!("cannot read the script: {e}")))?;
    // Each statement is cut out of the script's own text: a token printed
    // back is not always its source (a string's doubled quotes come back
    // single), and a statement must never read differently from what its
    // author wrote.
    let offsets = Offsets::new(script);
    let mut statements = Vec::new();
    // The current statement: its line, and where it starts and ends.
    let mut current: Option<(u32, usize, usize)> = None;
    for token in tokens {
        match &token.token {
            Token::SemiColon => {
                if let Some((line, from, to)) = current.take() {
                    statements.push(Statement {
                        line,
                        sql: script[from..to].to_string(),
                    });
                }
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => {
                let from = offsets.at(token.span.start)?;
                let to = offsets.at(token.span.end)?;
                match &mut current {
                    Some((_, _, end)) => *end = to,
                    None => current = Some((token.span.start.line as u32, from, to)),
                }
            }
        }
    }
    if let Some((line, from, to)) = current {
        statements.push(Statement {
            line,
            sql: script[from..to].to_string(),
        });
    }
    Ok(statements)
}

/// Byte offsets of a script's (line, column) locations.
struct Offsets<'a> {
    script: &'a str,
    /// The byte offset each line starts at.
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(script: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(script.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            script,
            line_starts,
        }
    }

    /// The byte offset of a tokenizer location (1-based line and column,
    /// columns counted in characters).
    fn at(&self, location: Location) -> Result<usize, DataFusionError> {
        let bad = || volley_internal(format!("a token location {location} outside the script"));
        let start = *self
            .line_starts
            .get((location.line as usize).checked_sub(1).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        let column = (location.column as usize).saturating_sub(1);
        let rest = &self.script[start..];
        match rest.char_indices().nth(column) {
            Some((i, _)) => Ok(start + i),
            None if column == rest.chars().count() => Ok(self.script.len()),
            None => Err(bad()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_splits_into_statements_with_their_line_numbers() {
        let script =
            "-- setup\nCREATE VIEW v AS SELECT 1 AS x;\n\nSELECT ';' AS s,\n  x FROM v;\n SELECT 2";
        let statements = split_statements(script).unwrap();
        let lines: Vec<u32> = statements.iter().map(|s| s.line).collect();
        assert_eq!(
            lines,
            vec![2, 4, 6],
            "a leading comment is not the statement"
        );
        assert!(statements[1].sql.contains("';'"), "{:?}", statements[1]);
        assert!(statements[2].sql.trim() == "SELECT 2");
    }

    #[test]
    fn a_statement_reads_exactly_as_written_doubled_quotes_and_all() {
        let script =
            "SELECT 'x''; DROP TABLE t; SELECT ''1' AS v;\nSELECT 'é''s', \"a\"\"b\" FROM t";
        let statements = split_statements(script).unwrap();
        assert_eq!(statements.len(), 2, "{statements:?}");
        assert_eq!(
            statements[0].sql,
            "SELECT 'x''; DROP TABLE t; SELECT ''1' AS v"
        );
        assert_eq!(statements[1].sql, "SELECT 'é''s', \"a\"\"b\" FROM t");
        assert_eq!(statements[1].line, 2);
    }
}
