from chittyos.cli import main

main()
