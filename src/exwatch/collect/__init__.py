"""exwatch collect: get the evidence off Exchange servers, intact and provably so."""
