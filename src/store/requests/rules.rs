//! The rules of interactive requests, apart from storage: each type's config is validated and
//! normalized, and a resolution payload is checked against the config it answers.

use serde_json::{json, Map, Value};

use crate::store::error::StoreError;

/// The JSON type of a value, in the words of schema errors (`received string`, ...).
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn bad_config(msg: impl Into<String>) -> StoreError {
    StoreError::field("config", msg)
}

/// Validates and normalizes a request config for its type.
pub fn normalize_config(kind: &str, config: &Value) -> Result<Value, StoreError> {
    let Some(obj) = config.as_object() else {
        return Err(bad_config(format!(
            "config must be an object, got {}.",
            type_name(config)
        )));
    };
    match kind {
        "choice" => {
            let Some(options) = obj
                .get("options")
                .and_then(Value::as_array)
                .filter(|o| !o.is_empty())
            else {
                return Err(bad_config("choice config needs at least one option."));
            };
            let mut out = Vec::new();
            let mut ids: Vec<String> = Vec::new();
            for o in options {
                let id = o
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                let label = o
                    .get("label")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty());
                let (Some(id), Some(label)) = (id, label) else {
                    return Err(bad_config("every option needs a non-empty id and label."));
                };
                if ids.iter().any(|i| i == id) {
                    return Err(bad_config(format!("option ids must be unique ({id}).")));
                }
                ids.push(id.to_string());
                let mut opt = json!({ "id": id, "label": label });
                match o.get("variant") {
                    None | Some(Value::Null) => {}
                    Some(Value::String(v))
                        if ["primary", "secondary", "danger"].contains(&v.as_str()) =>
                    {
                        opt["variant"] = json!(v);
                    }
                    Some(_) => {
                        return Err(bad_config("variant must be primary, secondary or danger."))
                    }
                }
                out.push(opt);
            }
            let int = |k: &str, default: u64| -> Result<u64, StoreError> {
                match obj.get(k) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| bad_config(format!("{k} must be a whole number."))),
                }
            };
            let max = int("maxSelections", 1)?;
            let min = int("minSelections", 0)?;
            if max < 1 {
                return Err(bad_config("maxSelections must be at least 1."));
            }
            if min > max {
                return Err(bad_config("minSelections cannot exceed maxSelections."));
            }
            Ok(json!({ "options": out, "maxSelections": max, "minSelections": min }))
        }
        "text_input" => {
            let mut out = Map::new();
            match obj.get("placeholder") {
                None | Some(Value::Null) => {}
                Some(Value::String(p)) => {
                    out.insert("placeholder".into(), json!(p));
                }
                Some(_) => return Err(bad_config("placeholder must be a string.")),
            }
            match obj.get("validation") {
                None | Some(Value::Null) => {}
                Some(Value::Object(v)) => {
                    let mut val = Map::new();
                    for k in ["minLength", "maxLength"] {
                        match v.get(k) {
                            None | Some(Value::Null) => {}
                            Some(n) => {
                                let n = n.as_u64().ok_or_else(|| {
                                    bad_config(format!("validation.{k} must be a whole number."))
                                })?;
                                val.insert(k.into(), json!(n));
                            }
                        }
                    }
                    match v.get("pattern") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(p)) => {
                            if regex::Regex::new(p).is_err() {
                                return Err(bad_config(
                                    "validation.pattern must be a valid regular expression.",
                                ));
                            }
                            val.insert("pattern".into(), json!(p));
                        }
                        Some(_) => return Err(bad_config("validation.pattern must be a string.")),
                    }
                    out.insert("validation".into(), Value::Object(val));
                }
                Some(_) => return Err(bad_config("validation must be an object.")),
            }
            Ok(Value::Object(out))
        }
        "form" => {
            let Some(fields) = obj
                .get("fields")
                .and_then(Value::as_array)
                .filter(|f| !f.is_empty())
            else {
                return Err(bad_config("form config needs at least one field."));
            };
            let mut out = Vec::new();
            let mut names: Vec<String> = Vec::new();
            for f in fields {
                let Some(name) = f
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                else {
                    return Err(bad_config("every field needs a non-empty name."));
                };
                if names.iter().any(|n| n == name) {
                    return Err(bad_config(format!("field names must be unique ({name}).")));
                }
                names.push(name.to_string());
                let ftype = f.get("type").and_then(Value::as_str).unwrap_or("");
                if ![
                    "text",
                    "textarea",
                    "select",
                    "multiselect",
                    "checkbox",
                    "date",
                ]
                .contains(&ftype)
                {
                    return Err(bad_config(format!("field {name}: type must be text, textarea, select, multiselect, checkbox or date.")));
                }
                let mut field = json!({ "name": name, "type": ftype, "required": f.get("required").and_then(Value::as_bool).unwrap_or(false) });
                if let Some(l) = f.get("label").and_then(Value::as_str) {
                    field["label"] = json!(l);
                }
                let options = f.get("options").filter(|o| !o.is_null());
                if ftype == "select" || ftype == "multiselect" {
                    let opts: Option<Vec<String>> =
                        options.and_then(Value::as_array).and_then(|a| {
                            a.iter()
                                .map(|o| {
                                    o.as_str()
                                        .map(str::trim)
                                        .filter(|s| !s.is_empty())
                                        .map(str::to_string)
                                })
                                .collect()
                        });
                    match opts {
                        Some(o) if !o.is_empty() => field["options"] = json!(o),
                        _ => {
                            return Err(bad_config(format!(
                            "field {name}: options (non-empty strings) are required for {ftype}."
                        )))
                        }
                    }
                } else if options.is_some() {
                    return Err(bad_config(format!(
                        "field {name}: options are only allowed for select and multiselect."
                    )));
                }
                out.push(field);
            }
            let mut cfg = json!({ "fields": out });
            if let Some(s) = obj.get("submitLabel").and_then(Value::as_str) {
                cfg["submitLabel"] = json!(s);
            }
            Ok(cfg)
        }
        _ => Err(StoreError::field(
            "type",
            "type must be choice, text_input or form.",
        )),
    }
}

fn bad_payload(field: &str, msg: impl Into<String>) -> StoreError {
    StoreError::field(field, msg)
}

/// Validates a resolution payload; returns the stored payload and the dispatch summary line.
pub fn check_resolution(
    kind: &str,
    title: &str,
    config: &Value,
    body: &Map<String, Value>,
) -> Result<(Value, String), StoreError> {
    let head = format!("[Request resolved: {}]", Value::String(title.to_string()));
    match kind {
        "choice" => {
            let ids: Vec<String> = match body.get("selectedOptionIds").and_then(Value::as_array) {
                Some(a) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        bad_payload("selectedOptionIds", "selectedOptionIds must be strings.")
                    })?,
                None => {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        "selectedOptionIds is required.",
                    ))
                }
            };
            let known: Vec<&str> = config["options"]
                .as_array()
                .map(|o| o.iter().filter_map(|x| x["id"].as_str()).collect())
                .unwrap_or_default();
            for (i, id) in ids.iter().enumerate() {
                if !known.contains(&id.as_str()) {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        format!("Unknown option id: {id}"),
                    ));
                }
                if ids[..i].contains(id) {
                    return Err(bad_payload(
                        "selectedOptionIds",
                        "selectedOptionIds must be unique.",
                    ));
                }
            }
            let (min, max) = (
                config["minSelections"].as_u64().unwrap_or(0),
                config["maxSelections"].as_u64().unwrap_or(1),
            );
            let n = ids.len() as u64;
            if n < min || n > max {
                return Err(bad_payload(
                    "selectedOptionIds",
                    format!("Select between {min} and {max} options."),
                ));
            }
            Ok((
                json!({ "selectedOptionIds": ids }),
                format!("{head} Selected: {}", ids.join(", ")),
            ))
        }
        "text_input" => {
            let text = match body.get("text") {
                Some(Value::String(t)) => t.trim().to_string(),
                _ => return Err(bad_payload("text", "text is required.")),
            };
            if text.is_empty() {
                return Err(bad_payload("text", "text cannot be empty."));
            }
            let v = &config["validation"];
            let len = text.chars().count() as u64;
            if let Some(min) = v["minLength"].as_u64() {
                if len < min {
                    return Err(bad_payload(
                        "text",
                        format!("text must be at least {min} characters."),
                    ));
                }
            }
            if let Some(max) = v["maxLength"].as_u64() {
                if len > max {
                    return Err(bad_payload(
                        "text",
                        format!("text must be at most {max} characters."),
                    ));
                }
            }
            if let Some(p) = v["pattern"].as_str() {
                if !regex::Regex::new(p)
                    .map(|r| r.is_match(&text))
                    .unwrap_or(false)
                {
                    return Err(bad_payload(
                        "text",
                        "text does not match the required pattern.",
                    ));
                }
            }
            Ok((json!({ "text": text }), format!("{head} Response: {text}")))
        }
        _ => {
            let Some(values) = body.get("values").and_then(Value::as_object) else {
                return Err(bad_payload("values", "values is required."));
            };
            let fields = config["fields"].as_array().cloned().unwrap_or_default();
            for k in values.keys() {
                if !fields.iter().any(|f| f["name"] == *k) {
                    return Err(bad_payload("values", format!("Unknown field: {k}")));
                }
            }
            for f in &fields {
                let name = f["name"].as_str().unwrap_or("");
                let ftype = f["type"].as_str().unwrap_or("");
                let options: Vec<&str> = f["options"]
                    .as_array()
                    .map(|o| o.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let v = values.get(name).filter(|v| !v.is_null());
                let empty = match v {
                    None => true,
                    Some(Value::String(s)) => s.trim().is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(_) => false,
                };
                if f["required"] == true && empty && ftype != "checkbox" {
                    return Err(bad_payload("values", format!("{name} is required.")));
                }
                if f["required"] == true && ftype == "checkbox" && v.is_none() {
                    return Err(bad_payload("values", format!("{name} is required.")));
                }
                let Some(v) = v else { continue };
                let ok = match ftype {
                    "checkbox" => v.is_boolean(),
                    "multiselect" => v.as_array().is_some_and(|a| {
                        a.iter()
                            .all(|x| x.as_str().is_some_and(|s| options.contains(&s)))
                    }),
                    "select" => v
                        .as_str()
                        .is_some_and(|s| s.is_empty() || options.contains(&s)),
                    _ => v.is_string(),
                };
                if !ok {
                    return Err(bad_payload(
                        "values",
                        format!("{name} has an invalid value for a {ftype} field."),
                    ));
                }
            }
            let values = Value::Object(values.clone());
            Ok((
                json!({ "values": values }),
                format!("{head} Form values: {values}"),
            ))
        }
    }
}
