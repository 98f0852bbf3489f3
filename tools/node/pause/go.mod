module gru.local/node/pause

go 1.24
