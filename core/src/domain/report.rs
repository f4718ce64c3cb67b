//! Limits on what an agent may report (a report is stored as it comes).

use meshfleet_model::{FieldError, StatusReport};

pub fn validate_report(report: &StatusReport) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if report.components.len() > 32 {
        errors.push(FieldError::new("/components", "at most 32 components"));
    }
    for (i, c) in report.components.iter().enumerate() {
        if c.name.is_empty() || c.name.chars().count() > 63 {
            errors.push(FieldError::new(
                format!("/components/{i}/name"),
                "1 to 63 characters",
            ));
        }
        if c.message.as_ref().is_some_and(|m| m.chars().count() > 4096) {
            errors.push(FieldError::new(
                format!("/components/{i}/message"),
                "at most 4096 characters",
            ));
        }
        if c.conditions.len() > 16 {
            errors.push(FieldError::new(
                format!("/components/{i}/conditions"),
                "at most 16 conditions",
            ));
        }
    }
    if report.conditions.len() > 16 {
        errors.push(FieldError::new("/conditions", "at most 16 conditions"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
