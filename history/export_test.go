package history

// ReadStamp exposes readStamp to the fuzz target of package history_test.
var ReadStamp = readStamp
