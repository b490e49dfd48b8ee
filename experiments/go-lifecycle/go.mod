module atropos.dev/golifecycle

go 1.19
