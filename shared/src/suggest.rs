//! "Did you mean" hints for misspelt names.

/// The candidate closest to `word`, if one is close enough to be a likely typo.
pub fn closest<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    // Typos are mostly one or two edits (transpositions included); longer
    // names tolerate a little more.
    let allowed = (word.chars().count() / 4).clamp(1, 3);
    let mut best: Option<(usize, f64, &'a str)> = None;
    for candidate in candidates {
        if candidate == word {
            continue;
        }
        let distance = strsim::osa_distance(word, candidate);
        let similarity = strsim::jaro_winkler(word, candidate);
        if distance > allowed && similarity < 0.85 {
            continue;
        }
        let better = best.is_none_or(|(d, s, _)| distance < d || (distance == d && similarity > s));
        if better {
            best = Some((distance, similarity, candidate));
        }
    }
    best.map(|(_, _, c)| c)
}

/// A hint sentence for `word`, such as "did you mean 'fetch'?", or `None`.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<String>
where
    I: IntoIterator<Item = &'a str>,
{
    closest(word, candidates).map(|c| format!("did you mean '{c}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(closest("fetc", ["fetch", "post"]), Some("fetch"));
        assert_eq!(closest("htp", ["shell", "http"]), Some("http"));
        assert_eq!(closest("tlp", ["tpl", "other"]), Some("tpl"));
        assert_eq!(closest("zzzz", ["fetch", "post"]), None);
        assert_eq!(closest("a", ["b", "c"]), Some("b"));
    }
}
