"""Files written whole or not at all, and one process per run or download folder."""
