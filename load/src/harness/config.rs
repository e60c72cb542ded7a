//! The config a harness server starts with: a base giftstream.toml and edits by dotted
//! path, the shell scripts' sed expressions as data.

use std::path::Path;

use anyhow::Context;

/// A giftstream.toml to start a server with: a base file and edits by dotted path
/// (`commit.interval_ms=5`), the shell scripts' sed expressions as data.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    table: toml::Table,
}

/// An edit of a [`ServerConfig`]: `path=value` (a TOML value; a bare word is taken as a
/// string), or `path=` to delete the key (for an older binary that does not know it).
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub path: String,
    pub value: Option<toml::Value>,
}

impl std::str::FromStr for Edit {
    type Err = String;
    fn from_str(text: &str) -> Result<Edit, String> {
        let (path, value) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: expected section.key=value (or section.key= to delete)")
        })?;
        let (path, value) = (path.trim(), value.trim());
        if path.is_empty() {
            return Err(format!("{text:?}: no key"));
        }
        if value.is_empty() {
            return Ok(Edit {
                path: path.to_owned(),
                value: None,
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        Ok(Edit {
            path: path.to_owned(),
            value: Some(parsed),
        })
    }
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {v}", self.path),
            None => write!(f, "{} deleted", self.path),
        }
    }
}

impl ServerConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<ServerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
        let table = text
            .parse()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(ServerConfig { table })
    }

    pub fn edit(&mut self, edit: &Edit) -> anyhow::Result<()> {
        let mut keys: Vec<&str> = edit.path.split('.').collect();
        let last = keys.pop().expect("split gives one");
        let mut table = &mut self.table;
        for k in keys {
            table = table
                .entry(k)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("{}: {k} is not a table", edit.path))?;
        }
        match &edit.value {
            Some(v) => {
                table.insert(last.to_owned(), v.clone());
            }
            None => {
                table.remove(last);
            }
        }
        Ok(())
    }

    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) {
        let edit = Edit {
            path: path.to_owned(),
            value: Some(value.into()),
        };
        self.edit(&edit).expect("a path into the config's tables");
    }

    pub fn get(&self, path: &str) -> Option<&toml::Value> {
        let mut keys = path.split('.');
        let mut v = self.table.get(keys.next()?)?;
        for k in keys {
            v = v.as_table()?.get(k)?;
        }
        Some(v)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(&self.table)?)
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_toml()?).with_context(|| format!("write {}", path.display()))
    }
}
