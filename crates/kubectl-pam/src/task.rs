//! Operations as people type them: `delete deployments.apps`, `create pods/exec`.
//!
//! A resource is written `RESOURCE[.GROUP][/SUBRESOURCE]`, as `kubectl auth can-i` and RBAC
//! spell them: no group means the core group (`pods`, `secrets`), and the group is everything
//! after the first dot (`certificatesigningrequests.certificates.k8s.io`).

use kubepam_core::api::TaskSpec;

/// Why a task or resource string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not `VERBS RESOURCES [NAMES]`.
    #[error(
        "invalid task {0:?}: write VERB RESOURCE, e.g. 'delete deployments.apps' or \
         'create pods/exec'; several are separated by commas, e.g. 'delete,patch deployments.apps'"
    )]
    Shape(String),
    /// A verb that is not lower-case letters or `*`.
    #[error("invalid verb {0:?}: use a Kubernetes verb such as delete, create, patch or *")]
    Verb(String),
    /// A resource that is not `RESOURCE[.GROUP][/SUBRESOURCE]`.
    #[error(
        "invalid resource {0:?}: write RESOURCE[.GROUP][/SUBRESOURCE] in plural lower case, \
         e.g. deployments.apps, pods or pods/exec"
    )]
    Resource(String),
    /// Resources of several API groups in one task would grant every combination.
    #[error(
        "the resources of one task must share an API group (got {0}); create one policy per group"
    )]
    MixedGroups(String),
    /// An empty or malformed resource name.
    #[error("invalid resource name {0:?}: names are lower-case DNS names, e.g. web")]
    Name(String),
}

/// One resource as RBAC names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The API group, `""` for core.
    pub group: String,
    /// The plural resource name, e.g. `deployments`.
    pub resource: String,
    /// The subresource, e.g. `exec`.
    pub subresource: Option<String>,
}

impl Resource {
    /// `resource` or `resource/subresource`, as RBAC and task policies write it.
    pub fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        if let Some(sub) = &self.subresource {
            write!(f, "/{sub}")?;
        }
        Ok(())
    }
}

fn is_dns_label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Parse `deployments.apps`, `pods/exec`, `deployments.apps/scale` or `*`.
pub fn parse_resource(input: &str) -> Result<Resource, Error> {
    let bad = || Error::Resource(input.to_owned());
    let (main, subresource) = match input.split_once('/') {
        Some((main, sub)) if sub == "*" || is_dns_label_chars(sub) => (main, Some(sub.to_owned())),
        Some(_) => return Err(bad()),
        None => (input, None),
    };
    let (resource, group) = main.split_once('.').unwrap_or((main, ""));
    let resource_ok = resource == "*" || is_dns_label_chars(resource);
    let group_ok = group.is_empty()
        || group == "*"
        || group
            .split('.')
            .all(|part| is_dns_label_chars(part) && !part.starts_with('-'));
    if !resource_ok || !group_ok || (main.contains('.') && group.is_empty()) {
        return Err(bad());
    }
    Ok(Resource {
        group: group.to_owned(),
        resource: resource.to_owned(),
        subresource,
    })
}

/// Parse a verb: lower-case letters, or `*`.
pub fn parse_verb(input: &str) -> Result<String, Error> {
    if input == "*" || (!input.is_empty() && input.chars().all(|c| c.is_ascii_lowercase())) {
        Ok(input.to_owned())
    } else {
        Err(Error::Verb(input.to_owned()))
    }
}

fn split_list(input: &str) -> impl Iterator<Item = &str> {
    input.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Parse a task string, `VERBS RESOURCES [NAMES]`, each part a comma-separated list:
/// `delete deployments.apps`, `delete,patch deployments.apps`, `create pods/exec`,
/// `delete deployments.apps web,api` (only those names).
pub fn parse_task(input: &str) -> Result<TaskSpec, Error> {
    let parts: Vec<&str> = input.split_whitespace().collect();
    let (verbs, resources, names) = match parts.as_slice() {
        [v, r] => (*v, *r, None),
        [v, r, n] => (*v, *r, Some(*n)),
        _ => return Err(Error::Shape(input.to_owned())),
    };
    let verbs = split_list(verbs)
        .map(parse_verb)
        .collect::<Result<Vec<_>, _>>()?;
    let resources = split_list(resources)
        .map(parse_resource)
        .collect::<Result<Vec<_>, _>>()?;
    if verbs.is_empty() || resources.is_empty() {
        return Err(Error::Shape(input.to_owned()));
    }
    let mut groups: Vec<&str> = resources.iter().map(|r| r.group.as_str()).collect();
    groups.dedup();
    if groups.len() > 1 {
        let shown: Vec<String> = groups
            .iter()
            .map(|g| {
                if g.is_empty() {
                    "the core group".to_owned()
                } else {
                    (*g).to_owned()
                }
            })
            .collect();
        return Err(Error::MixedGroups(shown.join(" and ")));
    }
    let resource_names = match names {
        None => None,
        Some(names) => Some(
            split_list(names)
                .map(|n| {
                    let ok = n.split('.').all(is_dns_label_chars);
                    if ok {
                        Ok(n.to_owned())
                    } else {
                        Err(Error::Name(n.to_owned()))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
        )
        .filter(|n: &Vec<String>| !n.is_empty()),
    };
    Ok(TaskSpec {
        verbs,
        api_groups: vec![resources[0].group.clone()],
        resources: resources.iter().map(Resource::full_resource).collect(),
        resource_names,
    })
}

/// A task as people type it, the inverse of [`parse_task`] for tasks of one group.
pub fn format_task(task: &TaskSpec) -> String {
    let group = match task.api_groups.as_slice() {
        [g] => g.clone(),
        groups => groups.join("|"),
    };
    let resources: Vec<String> = task
        .resources
        .iter()
        .map(|r| {
            let (main, sub) = match r.split_once('/') {
                Some((m, s)) => (m, Some(s)),
                None => (r.as_str(), None),
            };
            let mut out = main.to_owned();
            if !group.is_empty() {
                out.push('.');
                out.push_str(&group);
            }
            if let Some(sub) = sub {
                out.push('/');
                out.push_str(sub);
            }
            out
        })
        .collect();
    let mut out = format!("{} {}", task.verbs.join(","), resources.join(","));
    if let Some(names) = task.resource_names.as_ref().filter(|n| !n.is_empty()) {
        out.push(' ');
        out.push_str(&names.join(","));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_seed_task() {
        let task = parse_task("delete deployments.apps").unwrap();
        assert_eq!(task.verbs, ["delete"]);
        assert_eq!(task.api_groups, ["apps"]);
        assert_eq!(task.resources, ["deployments"]);
        assert_eq!(task.resource_names, None);
    }

    #[test]
    fn parses_core_subresources_several_verbs_and_names() {
        let exec = parse_task("create pods/exec").unwrap();
        assert_eq!(
            (exec.api_groups, exec.resources),
            (vec![String::new()], vec!["pods/exec".to_owned()])
        );
        let task = parse_task("delete,patch  deployments.apps,statefulsets.apps web,api").unwrap();
        assert_eq!(task.verbs, ["delete", "patch"]);
        assert_eq!(task.resources, ["deployments", "statefulsets"]);
        assert_eq!(
            task.resource_names,
            Some(vec!["web".to_owned(), "api".to_owned()])
        );
        let csr =
            parse_task("approve certificatesigningrequests.certificates.k8s.io/approval").unwrap();
        assert_eq!(csr.api_groups, ["certificates.k8s.io"]);
        assert_eq!(csr.resources, ["certificatesigningrequests/approval"]);
    }

    #[test]
    fn refuses_what_it_cannot_read_with_the_form_to_use() {
        for bad in [
            "",
            "delete",
            "delete deployments.apps web extra",
            "DELETE pods",
        ] {
            let err = parse_task(bad).unwrap_err();
            assert!(
                err.to_string().contains("delete") || err.to_string().contains("verb"),
                "{bad:?}: {err}"
            );
        }
        assert!(matches!(
            parse_task("delete Deployments"),
            Err(Error::Resource(_))
        ));
        assert!(matches!(
            parse_task("delete deployments.apps,pods"),
            Err(Error::MixedGroups(m)) if m == "apps and the core group"
        ));
        assert!(matches!(parse_resource("pods/"), Err(Error::Resource(_))));
        assert!(matches!(parse_resource("pods."), Err(Error::Resource(_))));
    }

    #[test]
    fn resources_print_as_typed() {
        for typed in [
            "deployments.apps",
            "pods/exec",
            "deployments.apps/scale",
            "*",
        ] {
            assert_eq!(parse_resource(typed).unwrap().to_string(), typed);
        }
    }

    proptest! {
        #[test]
        fn every_refused_task_names_the_bad_part_and_the_form_to_write(
            s in prop_oneof![
                ".{0,60}",
                "\\PC{0,30}",
                // Near misses: the right alphabet in the wrong order.
                "[a-zA-Z*]{0,8}[ ,]{0,2}[a-zA-Z0-9.*/_-]{0,24}( [a-zA-Z0-9.,_-]{0,12})?( x)?",
                "(delete|create|get|\\*)(,[a-z]{0,4}){0,2} (pods|deployments\\.apps|\\*)(/[a-z*]{0,5})?([.,/][a-zA-Z0-9.*/-]{0,10})?( [a-z0-9.,-]{0,10})?",
            ],
        ) {
            let _ = parse_resource(&s);
            match parse_task(&s) {
                Ok(task) => {
                    // What parses is a task the policy validator accepts, and prints back.
                    prop_assert!(!task.verbs.is_empty() && task.api_groups.len() == 1 && !task.resources.is_empty());
                    prop_assert!(task.verbs.iter().chain(&task.resources).all(|v| !v.trim().is_empty()));
                    prop_assert!(task.resource_names.iter().flatten().all(|n| !n.is_empty()));
                    prop_assert_eq!(parse_task(&format_task(&task)), Ok(task));
                }
                Err(e) => {
                    let message = e.to_string();
                    let named = match &e {
                        Error::Shape(x) => x == &s,
                        Error::Verb(x) | Error::Resource(x) | Error::Name(x) => !x.is_empty() && s.contains(x.as_str()),
                        Error::MixedGroups(groups) => !groups.is_empty(),
                    };
                    prop_assert!(named, "{e:?} does not name a part of {s:?}");
                    prop_assert!(
                        message.contains("e.g.") || message.contains("such as") || message.contains("one policy per group"),
                        "{message} does not say what to write"
                    );
                }
            }
        }

        #[test]
        fn a_parsed_task_formats_back_to_itself(
            verbs in proptest::collection::vec("[a-z]{1,8}", 1..3),
            resources in proptest::collection::vec("[a-z]{1,10}(/[a-z]{1,6})?", 1..3),
            group in "(|apps|[a-z]{1,6}\\.example\\.io)",
        ) {
            let typed = format!(
                "{} {}",
                verbs.join(","),
                resources
                    .iter()
                    .map(|r| {
                        let (main, sub) = r.split_once('/').map_or((r.as_str(), None), |(m, s)| (m, Some(s)));
                        let dot = if group.is_empty() { String::new() } else { format!(".{group}") };
                        sub.map_or_else(|| format!("{main}{dot}"), |s| format!("{main}{dot}/{s}"))
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let task = parse_task(&typed).unwrap();
            prop_assert_eq!(parse_task(&format_task(&task)).unwrap(), task);
        }
    }
}
