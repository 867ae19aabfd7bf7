//! The interactive shell: line editing and history (`~/.volley_history`,
//! Ctrl-R searches it), statements ended by `;` over several lines,
//! meta-commands, Tab to complete keywords, tables, columns and
//! meta-commands (`completion.rs`), Ctrl-C to cancel a running query (its job stops on the
//! cluster) or clear the line, Ctrl-D or `\q` to leave.

use std::path::PathBuf;

use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::{CompletionType, Config, Editor};
use volley_client::{ClientError, Context};

use super::completion::{Names, ShellHelper};
use super::output::{Expanded, Format};
use super::sql::{Display, run_script};

const HELP: &str = "\
Statements end with ';' and may span lines. Ctrl-C cancels a running query.
  \\?              this help
  \\q              quit (or Ctrl-D)
  \\d              list tables
  \\d NAME         a table's columns and types
  \\timing [on|off] show elapsed time after each query
  \\format [FORMAT] table, csv, tsv, json, ndjson or markdown; alone: the current one
  \\max-rows [N]   rows a table shows at most (0: all); alone: the current limit
  \\x [on|off|auto] rows as blocks of `column | value` lines; auto: when a row
                   does not fit the terminal (the default)
  \\o FILE         send results to FILE; \\o alone: back to the terminal
  \\i FILE         run the statements in FILE";

fn history_path() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".volley_history"))
}

pub(crate) async fn run(ctx: &Context, display: &mut Display) -> Result<(), ClientError> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ShellHelper, DefaultHistory> = Editor::with_config(config)
        .map_err(|e| ClientError::Usage(format!("cannot open the terminal: {e}")))?;
    let helper = ShellHelper::default();
    editor.set_helper(Some(helper.clone()));
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    eprintln!(
        "Volley SQL shell on {}. End statements with ';'. \\? for help, \\q to quit.",
        ctx.scheduler().url()
    );
    let mut buffer = String::new();
    loop {
        if buffer.is_empty() {
            // Tables created by the last statement complete too.
            helper.set_names(Names::read(ctx).await);
        }
        helper.set_statement(&buffer);
        let prompt = if buffer.is_empty() {
            "volley> "
        } else {
            "   ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(ClientError::Usage(format!("cannot read the terminal: {e}"))),
        };
        if buffer.is_empty() && line.trim_start().starts_with('\\') {
            let _ = editor.add_history_entry(line.as_str());
            save(&mut editor, history.as_deref());
            if !meta_command(ctx, line.trim(), display).await {
                break;
            }
            continue;
        }
        if buffer.is_empty() && line.trim().is_empty() {
            continue;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let script = std::mem::take(&mut buffer);
        let _ = editor.add_history_entry(script.trim_end());
        // Saved as each statement runs, so a crash or a killed terminal
        // loses none of it.
        save(&mut editor, history.as_deref());
        if let Err(e) = run_script(ctx, None, &script, display, false).await {
            eprintln!("Error: {}", super::one_line(&e));
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Writes the history file now.
fn save(editor: &mut Editor<ShellHelper, DefaultHistory>, path: Option<&std::path::Path>) {
    if let Some(path) = path {
        let _ = editor.save_history(path);
    }
}

/// Runs a meta-command; `false` means quit.
async fn meta_command(ctx: &Context, line: &str, display: &mut Display) -> bool {
    let mut words = line.splitn(2, char::is_whitespace);
    let command = words.next().unwrap_or_default();
    let argument = words.next().map(str::trim).filter(|a| !a.is_empty());
    match (command, argument) {
        ("\\q", _) => return false,
        ("\\?", _) | ("\\h", _) => println!("{HELP}"),
        ("\\d", None) => list_tables(ctx),
        ("\\d", Some(name)) => describe_table(ctx, name).await,
        ("\\timing", None) => {
            display.timing = !display.timing;
            println!("Timing is {}.", if display.timing { "on" } else { "off" });
        }
        ("\\timing", Some(value @ ("on" | "off"))) => {
            display.timing = value == "on";
            println!("Timing is {value}.");
        }
        ("\\format", None) => println!(
            "Output format is {}.",
            format!("{:?}", display.format).to_lowercase()
        ),
        ("\\max-rows", None) => println!("Tables show at most {} rows (0: all).", display.max_rows),
        ("\\max-rows", Some(n)) => match n.parse::<usize>() {
            Ok(n) => {
                display.max_rows = n;
                println!("Tables show at most {n} rows (0: all).");
            }
            Err(_) => eprintln!("Error: `{n}` is not a number of rows"),
        },
        ("\\x", argument) => {
            display.expanded = match argument {
                None if display.expanded == Expanded::On => Expanded::Off,
                None => Expanded::On,
                Some("on") => Expanded::On,
                Some("off") => Expanded::Off,
                Some("auto") => Expanded::Auto,
                Some(other) => {
                    eprintln!("Error: \\x takes on, off or auto, not `{other}`");
                    return true;
                }
            };
            println!(
                "Expanded display is {}.",
                format!("{:?}", display.expanded).to_lowercase()
            );
        }
        ("\\format", Some(name)) => match name.parse::<Format>() {
            Ok(format) => {
                display.format = format;
                println!("Output format is {name}.");
            }
            Err(e) => eprintln!("Error: {e}"),
        },
        ("\\o", None) => {
            display.output = None;
            println!("Results go to the terminal.");
        }
        ("\\o", Some(path)) => match std::fs::File::create(path) {
            Ok(file) => {
                display.output = Some((PathBuf::from(path), file));
                println!("Results go to {path}.");
            }
            Err(e) => eprintln!("Error: cannot write {path}: {e}"),
        },
        ("\\i", Some(path)) => match std::fs::read_to_string(path) {
            Ok(script) => {
                if let Err(e) = run_script(
                    ctx,
                    Some(std::path::Path::new(path)),
                    &script,
                    display,
                    false,
                )
                .await
                {
                    eprintln!("Error: {}", super::one_line(&e));
                }
            }
            Err(e) => eprintln!("Error: cannot read {path}: {e}"),
        },
        _ => eprintln!("Error: unknown command `{line}`; \\? lists the commands"),
    }
    true
}

fn list_tables(ctx: &Context) {
    let mut names = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            if let Some(schema) = catalog.schema(&schema_name) {
                for table in schema.table_names() {
                    names.push(if schema_name == "public" {
                        table
                    } else {
                        format!("{schema_name}.{table}")
                    });
                }
            }
        }
    }
    names.sort();
    if names.is_empty() {
        println!("No tables. Register some with CREATE EXTERNAL TABLE, or start with --tpch 0.1.");
    }
    for name in names {
        println!("{name}");
    }
}

async fn describe_table(ctx: &Context, name: &str) {
    match ctx.table_provider(name).await {
        Ok(table) => {
            let schema = table.schema();
            let rows: Vec<[String; 3]> = schema
                .fields()
                .iter()
                .map(|f| {
                    [
                        f.name().clone(),
                        f.data_type().to_string(),
                        if f.is_nullable() { "YES" } else { "NO" }.to_string(),
                    ]
                })
                .collect();
            let width = |i: usize, title: &str| {
                rows.iter()
                    .map(|r| r[i].len())
                    .max()
                    .unwrap_or(0)
                    .max(title.len())
            };
            let (w0, w1) = (width(0, "column"), width(1, "type"));
            println!("{:<w0$}  {:<w1$}  nullable", "column", "type");
            for [column, data_type, nullable] in rows {
                println!("{column:<w0$}  {data_type:<w1$}  {nullable}");
            }
        }
        Err(e) => eprintln!(
            "Error: {}",
            e.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}
